locals {
  environment = "prod"
  name        = "cryptopipe-${local.environment}"

  tags = merge(var.extra_tags, {
    Project     = "cryptopipe"
    Environment = local.environment
    ManagedBy   = "terraform"
    Repository  = "crypto-pipeline"
  })

  # Environment-specific safety settings (prod: zone-resilient and protected; dev: cheap and disposable).
  single_nat_gateway      = false
  rds_multi_az            = true
  rds_deletion_protection = true
  rds_skip_final_snapshot = false
  rds_backup_retention    = 14
  secrets_recovery_days   = 30
}

module "network" {
  source = "../../modules/network"

  name               = local.name
  cluster_name       = local.name
  vpc_cidr           = var.vpc_cidr
  single_nat_gateway = local.single_nat_gateway
}

module "eks" {
  source = "../../modules/eks"

  cluster_name                 = local.name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  private_subnet_ids           = module.network.private_subnet_ids
  endpoint_public_access       = var.endpoint_public_access
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  admin_principal_arns         = var.admin_principal_arns
}

module "s3" {
  source = "../../modules/s3"

  name                   = local.name
  retention_working_days = var.retention_working_days
}

module "ecr" {
  source = "../../modules/ecr"

  name                 = local.name
  repository_namespace = local.environment
}

module "secrets" {
  source = "../../modules/secrets"

  name                    = local.name
  recovery_window_in_days = local.secrets_recovery_days
}

module "rds" {
  source = "../../modules/rds"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.database_subnet_ids
  allowed_security_group_ids = { eks_nodes = module.eks.node_security_group_id }
  instance_class             = var.rds_instance_class

  multi_az                = local.rds_multi_az
  deletion_protection     = local.rds_deletion_protection
  skip_final_snapshot     = local.rds_skip_final_snapshot
  backup_retention_period = local.rds_backup_retention
}

module "identities" {
  source = "../../modules/identities"

  name                    = local.name
  cluster_name            = module.eks.cluster_name
  datalake_bucket_arn     = module.s3.datalake_bucket_arn
  archive_bucket_arn      = module.s3.archive_bucket_arn
  airflow_logs_bucket_arn = module.s3.airflow_logs_bucket_arn
  s3_kms_key_arn          = module.s3.kms_key_arn

  external_secret_arns = merge(module.secrets.secret_arns, { rds_master = module.rds.master_user_secret_arn })
  secrets_kms_key_arns = [module.secrets.kms_key_arn, module.rds.kms_key_arn]
}
