module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 21.0"

  name               = var.cluster_name
  kubernetes_version = var.kubernetes_version

  # The identity running Terraform administers the cluster (it installs the charts below).
  enable_cluster_creator_admin_permissions = true
  endpoint_public_access                   = true

  addons = {
    coredns                = {}
    eks-pod-identity-agent = { before_compute = true }
    kube-proxy             = {}
    vpc-cni                = { before_compute = true }
    # The HPA behind the gateway's CPU trigger reads the resource metrics API.
    metrics-server = {}
  }

  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnets
  control_plane_subnet_ids = module.vpc.intra_subnets

  # A small fixed group for Karpenter itself and the cluster add-ons; every workload node
  # (general and GPU) is launched by Karpenter.
  eks_managed_node_groups = {
    system = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = ["m7i.large", "m6i.large"]
      min_size       = 2
      max_size       = 3
      desired_size   = 2
      labels = {
        "karpenter.sh/controller" = "true"
      }
    }
  }

  node_security_group_tags = {
    # Karpenter attaches this security group to the nodes it launches.
    "karpenter.sh/discovery" = var.cluster_name
  }
}
