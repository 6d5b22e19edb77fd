output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.eks.cluster_name
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "image_registry" {
  description = "PIPELINE_IMAGE_REGISTRY and the charts' image registry: images are <registry>/cryptopipe-<stage>:<tag>."
  value       = module.ecr.registry
}

output "registry_host" {
  description = "ECR host to log in to before pushing images."
  value       = module.ecr.registry_host
}

output "ecr_repository_urls" {
  description = "ECR repository URL per image."
  value       = module.ecr.repository_urls
}

output "storage_uri" {
  description = "storage.uri of the pipeline (CRYPTOPIPE_STORAGE__URI) and PIPELINE_STORAGE_URI of Airflow."
  value       = "s3://${module.s3.datalake_bucket_name}"
}

output "storage_archive_uri" {
  description = "storage.archive_uri of the pipeline (CRYPTOPIPE_STORAGE__ARCHIVE_URI)."
  value       = "s3://${module.s3.archive_bucket_name}/archive"
}

output "airflow_remote_base_log_folder" {
  description = "Airflow [logging] remote_base_log_folder (AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER)."
  value       = "s3://${module.s3.airflow_logs_bucket_name}/logs"
}

output "bucket_names" {
  description = "Bucket names: datalake, archive, airflow_logs, access_logs."
  value = {
    datalake     = module.s3.datalake_bucket_name
    archive      = module.s3.archive_bucket_name
    airflow_logs = module.s3.airflow_logs_bucket_name
    access_logs  = module.s3.access_logs_bucket_name
  }
}

output "database_subnet_cidrs" {
  description = "CIDRs of the database subnets: the egress allowed to task pods by the chart's network policy (networkPolicy.warehouse.cidrs)."
  value       = module.network.database_subnet_cidrs
}

output "rds_address" {
  description = "Private host name of PostgreSQL (Airflow metadata database and warehouse)."
  value       = module.rds.address
}

output "rds_port" {
  description = "PostgreSQL port."
  value       = module.rds.port
}

output "rds_db_name" {
  description = "Database created with the instance: the Airflow metadata database."
  value       = module.rds.db_name
}

output "rds_master_secret_arn" {
  description = "ARN of the RDS-managed secret (JSON username/password) that External Secrets turns into the Airflow metadata connection and CRYPTOPIPE_WAREHOUSE__URL."
  value       = module.rds.master_user_secret_arn
}

output "secret_names" {
  description = "Secrets Manager names External Secrets reads, by purpose: coingecko_api_key, slack_webhook_url, airflow_* (values are put by an operator)."
  value       = module.secrets.secret_names
}

output "role_arns" {
  description = "IAM role per workload, bound to its service account by EKS Pod Identity (no service-account annotation needed)."
  value       = module.identities.role_arns
}

output "service_accounts" {
  description = "Namespace and service accounts bound to each role: the charts must create exactly these."
  value       = module.identities.service_accounts
}

output "helm_handover" {
  description = "Everything the EKS values take from Terraform, in one object: k8s/eks/render-values.py fills charts/*/values-eks.yaml and k8s/eks/cluster-secret-store.yaml from `terraform output -json helm_handover`."
  value = {
    region                         = var.region
    cluster_name                   = module.eks.cluster_name
    image_registry                 = module.ecr.registry
    airflow_image_repository       = module.ecr.repository_urls["cryptopipe-airflow"]
    storage_uri                    = "s3://${module.s3.datalake_bucket_name}"
    storage_archive_uri            = "s3://${module.s3.archive_bucket_name}/archive"
    airflow_remote_base_log_folder = "s3://${module.s3.airflow_logs_bucket_name}/logs"
    rds_address                    = module.rds.address
    rds_port                       = module.rds.port
    rds_db_name                    = module.rds.db_name
    rds_master_secret_arn          = module.rds.master_user_secret_arn
    coingecko_api_key_secret       = module.secrets.secret_names["coingecko_api_key"]
    slack_webhook_url_secret       = module.secrets.secret_names["slack_webhook_url"]
    airflow_secret_names           = { for k, v in module.secrets.secret_names : k => v if startswith(k, "airflow_") }
    database_subnet_cidrs          = module.network.database_subnet_cidrs
  }
}
