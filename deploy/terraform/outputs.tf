output "cluster_name" {
  description = "EKS cluster name."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "EKS API endpoint."
  value       = module.eks.cluster_endpoint
}

output "configure_kubectl" {
  description = "Command that writes the kubeconfig entry for this cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint (TLS, port 6379); the password is in the whisper-redis Secret."
  value       = local.redis_address
}

output "ecr_repositories" {
  description = "Image repository URL per Dockerfile target (set them in the eks-gpu overlay's images)."
  value       = { for k, r in aws_ecr_repository.images : k => r.repository_url }
}

output "model_bucket_uri" {
  description = "Where to upload faster-whisper model folders (MODEL_SOURCE in the eks-gpu overlay's model-<pool>.env)."
  value       = "s3://${aws_s3_bucket.models.bucket}"
}

output "karpenter_interruption_queue" {
  description = "SQS queue Karpenter reads spot interruptions and rebalance events from."
  value       = module.karpenter.queue_name
}

output "karpenter_node_role" {
  description = "IAM role of the nodes Karpenter launches."
  value       = module.karpenter.node_iam_role_name
}

output "grafana_admin_password" {
  description = "Grafana admin password (kube-prometheus-stack)."
  value       = random_password.grafana_admin.result
  sensitive   = true
}

output "api_key" {
  description = "The generated API key (client name `default`) for the gateway."
  value       = random_password.api_key.result
  sensitive   = true
}
