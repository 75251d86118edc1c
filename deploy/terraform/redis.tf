# ElastiCache (Valkey or Redis OSS 7+): TLS in transit, an AUTH token, encryption at rest,
# Multi-AZ with automatic failover. Streams must never be evicted: noeviction.
resource "random_password" "redis_auth" {
  length  = 48
  special = false # it is also embedded in the rediss:// URL the pods get
}

resource "aws_elasticache_subnet_group" "redis" {
  name       = "${var.cluster_name}-redis"
  subnet_ids = module.vpc.private_subnets
}

resource "aws_security_group" "redis" {
  name        = "${var.cluster_name}-redis"
  description = "Redis for whisper-streaming: reachable from the cluster nodes only"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_nodes" {
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = module.eks.node_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "pods on EKS nodes (service, KEDA, redis exporter)"
}

resource "aws_elasticache_parameter_group" "redis" {
  name   = "${var.cluster_name}-redis"
  family = var.redis_engine == "valkey" ? "valkey${split(".", var.redis_engine_version)[0]}" : "redis${split(".", var.redis_engine_version)[0]}"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = "${var.cluster_name}-redis"
  description          = "whisper-streaming streams, sessions and results"

  engine               = var.redis_engine
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis.name
  subnet_group_name    = aws_elasticache_subnet_group.redis.name
  security_group_ids   = [aws_security_group.redis.id]

  num_cache_clusters         = var.redis_replicas
  automatic_failover_enabled = true
  multi_az_enabled           = true

  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.redis_auth.result
  auth_token_update_strategy = "ROTATE"
  at_rest_encryption_enabled = true

  snapshot_retention_limit   = 3
  auto_minor_version_upgrade = true
  apply_immediately          = false
}

locals {
  redis_host    = aws_elasticache_replication_group.redis.primary_endpoint_address
  redis_address = "${local.redis_host}:6379"
  redis_url     = "rediss://:${random_password.redis_auth.result}@${local.redis_host}:6379/0"
}
