# Karpenter: controller IAM (EKS Pod Identity), node IAM role, SQS interruption queue and its
# EventBridge rules, from the EKS module's karpenter submodule.
module "karpenter" {
  source  = "terraform-aws-modules/eks/aws//modules/karpenter"
  version = "~> 21.0"

  cluster_name = module.eks.cluster_name

  node_iam_role_use_name_prefix   = false
  node_iam_role_name              = "${var.cluster_name}-karpenter-node"
  create_pod_identity_association = true

  node_iam_role_additional_policies = {
    AmazonSSMManagedInstanceCore = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
  }
}

resource "helm_release" "karpenter" {
  namespace           = "kube-system"
  name                = "karpenter"
  repository          = "oci://public.ecr.aws/karpenter"
  repository_username = data.aws_ecrpublic_authorization_token.token.user_name
  repository_password = data.aws_ecrpublic_authorization_token.token.password
  chart               = "karpenter"
  version             = var.chart_versions.karpenter
  wait                = true

  values = [
    yamlencode({
      nodeSelector = { "karpenter.sh/controller" = "true" }
      dnsPolicy    = "Default"
      settings = {
        clusterName       = module.eks.cluster_name
        clusterEndpoint   = module.eks.cluster_endpoint
        interruptionQueue = module.karpenter.queue_name
      }
      webhook = { enabled = false }
    })
  ]
}

# --- node classes -------------------------------------------------------------------------------
resource "kubectl_manifest" "nodeclass_default" {
  yaml_body = yamlencode({
    apiVersion = "karpenter.k8s.aws/v1"
    kind       = "EC2NodeClass"
    metadata   = { name = "default" }
    spec = {
      amiSelectorTerms           = [{ alias = "al2023@${var.node_ami_version}" }]
      role                       = module.karpenter.node_iam_role_name
      subnetSelectorTerms        = [{ tags = { "karpenter.sh/discovery" = var.cluster_name } }]
      securityGroupSelectorTerms = [{ tags = { "karpenter.sh/discovery" = var.cluster_name } }]
      metadataOptions = {
        httpTokens              = "required"
        httpPutResponseHopLimit = 1
      }
      blockDeviceMappings = [{
        deviceName = "/dev/xvda"
        ebs        = { volumeSize = "60Gi", volumeType = "gp3", encrypted = true }
      }]
      tags = { "karpenter.sh/discovery" = var.cluster_name }
    }
  })

  depends_on = [helm_release.karpenter]
}

# GPU nodes: the AL2023 alias resolves to the NVIDIA AMI variant (driver and container toolkit)
# on GPU instance types; a bigger root volume for the CUDA image and the synced model.
resource "kubectl_manifest" "nodeclass_gpu" {
  yaml_body = yamlencode({
    apiVersion = "karpenter.k8s.aws/v1"
    kind       = "EC2NodeClass"
    metadata   = { name = "gpu" }
    spec = {
      amiSelectorTerms           = [{ alias = "al2023@${var.node_ami_version}" }]
      role                       = module.karpenter.node_iam_role_name
      subnetSelectorTerms        = [{ tags = { "karpenter.sh/discovery" = var.cluster_name } }]
      securityGroupSelectorTerms = [{ tags = { "karpenter.sh/discovery" = var.cluster_name } }]
      metadataOptions = {
        httpTokens              = "required"
        httpPutResponseHopLimit = 1
      }
      blockDeviceMappings = [{
        deviceName = "/dev/xvda"
        ebs        = { volumeSize = "200Gi", volumeType = "gp3", iops = 6000, throughput = 500, encrypted = true }
      }]
      tags = { "karpenter.sh/discovery" = var.cluster_name }
    }
  })

  depends_on = [helm_release.karpenter]
}

# --- node pools -------------------------------------------------------------------------------
# Gateways, VAD workers and the monitoring stack (deploy/keda/overlays/eks-gpu selects it by the
# karpenter.sh/nodepool label, which Karpenter puts on every node it launches).
resource "kubectl_manifest" "nodepool_general" {
  yaml_body = yamlencode({
    apiVersion = "karpenter.sh/v1"
    kind       = "NodePool"
    metadata   = { name = "general" }
    spec = {
      template = {
        spec = {
          nodeClassRef = { group = "karpenter.k8s.aws", kind = "EC2NodeClass", name = "default" }
          requirements = [
            { key = "kubernetes.io/arch", operator = "In", values = ["amd64"] },
            { key = "karpenter.sh/capacity-type", operator = "In", values = ["on-demand", "spot"] },
            { key = "karpenter.k8s.aws/instance-category", operator = "In", values = ["c", "m", "r"] },
            { key = "karpenter.k8s.aws/instance-generation", operator = "Gt", values = ["5"] },
            { key = "karpenter.k8s.aws/instance-cpu", operator = "In", values = ["4", "8", "16"] },
          ]
          expireAfter = "720h"
        }
      }
      limits = { cpu = tostring(var.general_cpu_limit) }
      disruption = {
        consolidationPolicy = "WhenEmptyOrUnderutilized"
        consolidateAfter    = "2m"
      }
    }
  })

  depends_on = [kubectl_manifest.nodeclass_default]
}

# ASR workers: g5/g6 with one NVIDIA GPU, tainted so that nothing else lands there. The limits
# cap spend; empty GPU nodes go away five minutes after KEDA scales the pool to zero.
resource "kubectl_manifest" "nodepool_gpu" {
  yaml_body = yamlencode({
    apiVersion = "karpenter.sh/v1"
    kind       = "NodePool"
    metadata   = { name = "gpu" }
    spec = {
      template = {
        spec = {
          nodeClassRef = { group = "karpenter.k8s.aws", kind = "EC2NodeClass", name = "gpu" }
          requirements = [
            { key = "kubernetes.io/arch", operator = "In", values = ["amd64"] },
            { key = "karpenter.sh/capacity-type", operator = "In", values = var.gpu_capacity_types },
            { key = "karpenter.k8s.aws/instance-family", operator = "In", values = var.gpu_instance_families },
            { key = "karpenter.k8s.aws/instance-gpu-count", operator = "In", values = ["1"] },
            { key = "karpenter.k8s.aws/instance-gpu-manufacturer", operator = "In", values = ["nvidia"] },
          ]
          taints = [
            { key = "nvidia.com/gpu", value = "true", effect = "NoSchedule" },
          ]
          expireAfter = "720h"
        }
      }
      limits = {
        cpu              = tostring(var.gpu_limit * 16)
        "nvidia.com/gpu" = tostring(var.gpu_limit)
      }
      disruption = {
        consolidationPolicy = "WhenEmpty"
        consolidateAfter    = "5m"
      }
      weight = 10
    }
  })

  depends_on = [kubectl_manifest.nodeclass_gpu]
}
