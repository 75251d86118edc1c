# What deploy/keda/overlays/eks-gpu expects to find: the namespace, the Redis Secret, the image
# repositories, and a bucket of models readable by the pods (EKS Pod Identity).
resource "kubernetes_namespace_v1" "app" {
  metadata {
    name = local.app_namespace
    labels = {
      "pod-security.kubernetes.io/enforce"         = "restricted"
      "pod-security.kubernetes.io/enforce-version" = "latest"
    }
  }
}

resource "kubernetes_secret_v1" "whisper_redis" {
  metadata {
    name      = "whisper-redis"
    namespace = kubernetes_namespace_v1.app.metadata[0].name
  }
  data = {
    address     = local.redis_address
    password    = random_password.redis_auth.result
    "redis-url" = local.redis_url
  }
}

# The gateway's API keys (AUTH_ENABLED is on): one generated key to start with; add lines
# (`name:key` or `name:sha256:<hex>`) for each client.
resource "random_password" "api_key" {
  length  = 40
  special = false
}

resource "kubernetes_secret_v1" "api_keys" {
  metadata {
    name      = "whisper-api-keys"
    namespace = kubernetes_namespace_v1.app.metadata[0].name
  }
  data = {
    keys = "default:${random_password.api_key.result}\n"
  }
}

resource "aws_ecr_repository" "images" {
  for_each = toset(["gateway", "vad-worker", "asr-worker-cpu", "asr-worker-cuda"])

  name                 = "whisper-streaming/${each.key}"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "AES256"
  }
}

data "aws_caller_identity" "current" {}

resource "aws_s3_bucket" "models" {
  bucket = "${var.cluster_name}-models-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_public_access_block" "models" {
  bucket                  = aws_s3_bucket.models.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

data "aws_iam_policy_document" "pods_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "models_read" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.models.arn]
  }
  statement {
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.models.arn}/*"]
  }
}

resource "aws_iam_role" "app" {
  name               = "${var.cluster_name}-app"
  assume_role_policy = data.aws_iam_policy_document.pods_assume.json
}

resource "aws_iam_role_policy" "app_models_read" {
  name   = "models-read"
  role   = aws_iam_role.app.id
  policy = data.aws_iam_policy_document.models_read.json
}

resource "aws_eks_pod_identity_association" "app" {
  cluster_name    = module.eks.cluster_name
  namespace       = local.app_namespace
  service_account = "whisper-streaming"
  role_arn        = aws_iam_role.app.arn
}
