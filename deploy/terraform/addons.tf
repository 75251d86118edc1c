# KEDA (its CRDs are the schemas tests/deploy validates the ScaledObjects against: keep the chart
# version in step), kube-prometheus-stack, the Redis exporter with stream checks, and the AWS Load
# Balancer Controller for the gateway's ALB.
resource "helm_release" "keda" {
  namespace        = "keda"
  create_namespace = true
  name             = "keda"
  repository       = "https://kedacore.github.io/charts"
  chart            = "keda"
  version          = var.chart_versions.keda

  values = [
    yamlencode({
      nodeSelector = { "karpenter.sh/nodepool" = "general" }
      prometheus = {
        operator     = { enabled = true, serviceMonitor = { enabled = true, additionalLabels = { release = "kube-prometheus-stack" } } }
        metricServer = { enabled = true, serviceMonitor = { enabled = true, additionalLabels = { release = "kube-prometheus-stack" } } }
        webhooks     = { enabled = true, serviceMonitor = { enabled = true, additionalLabels = { release = "kube-prometheus-stack" } } }
      }
    })
  ]

  depends_on = [kubectl_manifest.nodepool_general]
}

resource "random_password" "grafana_admin" {
  length  = 32
  special = false
}

resource "helm_release" "kube_prometheus_stack" {
  namespace        = "monitoring"
  create_namespace = true
  name             = "kube-prometheus-stack"
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = var.chart_versions.kube_prometheus_stack

  values = [
    yamlencode({
      grafana = {
        adminPassword = random_password.grafana_admin.result
        sidecar = {
          dashboards = {
            enabled         = true
            label           = "grafana_dashboard"
            labelValue      = "1"
            searchNamespace = "ALL" # the dashboard ConfigMap lives in the app namespace
          }
        }
      }
      prometheus = {
        prometheusSpec = {
          retention                               = "15d"
          serviceMonitorSelectorNilUsesHelmValues = true # select release=kube-prometheus-stack
          nodeSelector                            = { "karpenter.sh/nodepool" = "general" }
        }
      }
    })
  ]

  depends_on = [kubectl_manifest.nodepool_general]
}

resource "kubernetes_secret_v1" "redis_exporter" {
  metadata {
    name      = "redis-exporter-auth"
    namespace = "monitoring"
  }
  data = {
    password = random_password.redis_auth.result
  }

  depends_on = [helm_release.kube_prometheus_stack]
}

resource "helm_release" "redis_exporter" {
  namespace  = "monitoring"
  name       = "prometheus-redis-exporter"
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "prometheus-redis-exporter"
  version    = var.chart_versions.prometheus_redis_exporter

  values = [
    yamlencode({
      redisAddress = "rediss://${local.redis_address}"
      auth = {
        enabled = true
        secret  = { name = kubernetes_secret_v1.redis_exporter.metadata[0].name, key = "password" }
      }
      # Per-stream and per-group metrics: redis_stream_length, redis_stream_group_lag,
      # redis_stream_group_messages_pending, ... for the streams KEDA scales on.
      extraArgs = {
        "check-streams" = "db0=sessions,db0=asr:*"
      }
      serviceMonitor = {
        enabled = true
        labels  = { release = "kube-prometheus-stack" }
      }
      nodeSelector = { "karpenter.sh/nodepool" = "general" }
    })
  ]
}

module "aws_lb_controller_pod_identity" {
  source  = "terraform-aws-modules/eks-pod-identity/aws"
  version = "~> 2.0"

  name                            = "${var.cluster_name}-aws-lbc"
  attach_aws_lb_controller_policy = true

  associations = {
    controller = {
      cluster_name    = module.eks.cluster_name
      namespace       = "kube-system"
      service_account = "aws-load-balancer-controller"
    }
  }
}

resource "helm_release" "aws_load_balancer_controller" {
  namespace  = "kube-system"
  name       = "aws-load-balancer-controller"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = var.chart_versions.aws_load_balancer_controller

  values = [
    yamlencode({
      clusterName    = module.eks.cluster_name
      region         = var.region
      vpcId          = module.vpc.vpc_id
      serviceAccount = { name = "aws-load-balancer-controller" }
    })
  ]

  depends_on = [module.aws_lb_controller_pod_identity, kubectl_manifest.nodepool_general]
}
