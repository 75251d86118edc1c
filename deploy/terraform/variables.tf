variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "cluster_name" {
  description = "EKS cluster name; also prefixes the other resources' names."
  type        = string
  default     = "whisper-streaming"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name: 3-32 lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "kubernetes_version" {
  # In standard support until 27 Mar 2027 (EKS: 14 months from release, then extended-support
  # fees for 12 more); plan the move to 1.36 before then.
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.35"

  validation {
    condition     = can(regex("^1\\.(3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.30 or newer, as MAJOR.MINOR (preStop sleep hooks need 1.30)."
  }
}

variable "vpc_cidr" {
  description = "VPC CIDR block (a /16 leaves room for three AZs of private, public and intra subnets)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a valid IPv4 CIDR of /16 or larger."
  }
}

variable "gpu_instance_families" {
  description = "EC2 families Karpenter may launch for ASR workers (NVIDIA A10G: g5, L4: g6, L40S: g6e)."
  type        = list(string)
  default     = ["g6", "g5"]

  validation {
    condition     = length(var.gpu_instance_families) > 0 && alltrue([for f in var.gpu_instance_families : contains(["g5", "g6", "g6e"], f)])
    error_message = "gpu_instance_families must be a non-empty subset of g5, g6, g6e."
  }
}

variable "gpu_capacity_types" {
  description = "Capacity types for GPU nodes; spot is much cheaper, and the workers hand jobs back on interruption."
  type        = list(string)
  default     = ["spot", "on-demand"]

  validation {
    condition     = length(var.gpu_capacity_types) > 0 && alltrue([for c in var.gpu_capacity_types : contains(["spot", "on-demand"], c)])
    error_message = "gpu_capacity_types must be a non-empty subset of spot, on-demand."
  }
}

variable "gpu_limit" {
  description = "Most GPUs the gpu NodePool may hold at once (a cost ceiling; keep >= the asr-worker maxReplicaCount)."
  type        = number
  default     = 16

  validation {
    condition     = var.gpu_limit >= 1 && var.gpu_limit <= 256 && floor(var.gpu_limit) == var.gpu_limit
    error_message = "gpu_limit must be a whole number from 1 to 256."
  }
}

variable "general_cpu_limit" {
  description = "Most vCPUs the general (CPU) NodePool may hold."
  type        = number
  default     = 256

  validation {
    condition     = var.general_cpu_limit >= 8
    error_message = "general_cpu_limit must be at least 8."
  }
}

variable "redis_engine" {
  description = "ElastiCache engine: valkey or redis (KEDA's lag trigger needs Redis 7 semantics; both qualify)."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.redis_engine)
    error_message = "redis_engine must be valkey or redis."
  }
}

variable "redis_engine_version" {
  description = "Engine version: 7.2 or 8.x for valkey, 7.1 for redis (XINFO GROUPS lag needs 7.0+)."
  type        = string
  default     = "8.0"

  validation {
    condition     = can(regex("^([7-9])\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be 7.x or newer (MAJOR.MINOR)."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r7g.large"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must look like cache.r7g.large."
  }
}

variable "redis_replicas" {
  description = "Cache nodes in the replication group (primary included); 2 or more gives Multi-AZ failover."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_replicas >= 2 && var.redis_replicas <= 6
    error_message = "redis_replicas must be from 2 to 6 (failover needs a replica)."
  }
}

variable "node_ami_version" {
  # Karpenter advises against al2023@latest in production: every new EKS AMI would roll every
  # node (drift) the week it is published, untested. Pin a release of awslabs/amazon-eks-ami and
  # bump it deliberately.
  description = "EKS-optimized AL2023 AMI release for Karpenter's EC2NodeClasses (alias al2023@<this>)."
  type        = string
  default     = "v20260903"

  validation {
    condition     = can(regex("^v[0-9]{8}$", var.node_ami_version))
    error_message = "node_ami_version must be an amazon-eks-ami release such as v20260903 (never latest)."
  }
}

variable "chart_versions" {
  description = "Helm chart versions (bump deliberately; keda must match the CRD schemas the manifests are validated against)."
  type = object({
    karpenter                    = string
    keda                         = string
    kube_prometheus_stack        = string
    prometheus_redis_exporter    = string
    nvidia_device_plugin         = string
    aws_load_balancer_controller = string
  })
  default = {
    karpenter                    = "1.15.0"
    keda                         = "2.20.2"
    kube_prometheus_stack        = "77.6.2"
    prometheus_redis_exporter    = "6.16.0"
    nvidia_device_plugin         = "0.17.4"
    aws_load_balancer_controller = "1.13.4"
  }

  validation {
    condition     = alltrue([for v in values(var.chart_versions) : can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", v))])
    error_message = "chart_versions must be exact semantic versions (X.Y.Z), never ranges."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
