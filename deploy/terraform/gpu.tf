# NVIDIA device plugin: advertises nvidia.com/gpu on the GPU nodes (the AL2023 NVIDIA AMI brings
# the driver and the container toolkit, not the plugin). It tolerates the GPU pool's taint and
# runs only where Karpenter's gpu pool put a node.
resource "helm_release" "nvidia_device_plugin" {
  namespace        = "nvidia-device-plugin"
  create_namespace = true
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.chart_versions.nvidia_device_plugin

  values = [
    yamlencode({
      tolerations = [
        { key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" },
      ]
      nodeSelector = { "karpenter.sh/nodepool" = "gpu" }
      # The chart's default affinity looks for NFD/GFD labels we do not deploy.
      affinity = null
    })
  ]

  depends_on = [kubectl_manifest.nodepool_gpu]
}
