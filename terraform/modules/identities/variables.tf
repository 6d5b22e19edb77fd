variable "name" {
  description = "Name prefix of every IAM role and policy of this module (for example `cryptopipe-dev`)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$", var.name))
    error_message = "name must be 3-32 characters of letters, digits and hyphens, starting with a letter (role names append up to 30 characters; IAM allows 64)."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "cluster_name" {
  description = "Name of the EKS cluster whose service accounts receive the roles (Pod Identity associations)."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be a valid EKS cluster name (1-100 characters: letters, digits, hyphens, underscores)."
  }
}

variable "datalake_bucket_arn" {
  description = "ARN of the data-lake bucket (storage.uri)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.datalake_bucket_arn))
    error_message = "datalake_bucket_arn must be an S3 bucket ARN (arn:aws:s3:::<bucket>), without a key or wildcard."
  }
}

variable "archive_bucket_arn" {
  description = "ARN of the archive bucket (storage.archive_uri)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.archive_bucket_arn))
    error_message = "archive_bucket_arn must be an S3 bucket ARN (arn:aws:s3:::<bucket>), without a key or wildcard."
  }
}

variable "airflow_logs_bucket_arn" {
  description = "ARN of the bucket for Airflow remote task logs."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.airflow_logs_bucket_arn))
    error_message = "airflow_logs_bucket_arn must be an S3 bucket ARN (arn:aws:s3:::<bucket>), without a key or wildcard."
  }
}

variable "s3_kms_key_arn" {
  description = "ARN of the KMS key encrypting the three buckets; roles may use it only through S3."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.s3_kms_key_arn))
    error_message = "s3_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "external_secret_arns" {
  description = "Secrets Manager secrets External Secrets may read, by purpose (for example coingecko_api_key, slack_webhook_url, rds_master). Nothing else is readable."
  type        = map(string)

  validation {
    condition     = length(var.external_secret_arns) > 0 && alltrue([for arn in values(var.external_secret_arns) : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))])
    error_message = "external_secret_arns must be a non-empty map of Secrets Manager secret ARNs (arn:aws:secretsmanager:<region>:<account>:secret:<name>)."
  }
}

variable "secrets_kms_key_arns" {
  description = "KMS keys encrypting the secrets in external_secret_arns; External Secrets may decrypt with them only through Secrets Manager."
  type        = list(string)

  validation {
    condition     = length(var.secrets_kms_key_arns) > 0 && alltrue([for arn in var.secrets_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", arn))])
    error_message = "secrets_kms_key_arns must be a non-empty list of KMS key ARNs."
  }
}

variable "task_namespace" {
  description = "Kubernetes namespace of the stage task pods (docs/architecture.md: crypto-tasks)."
  type        = string
  default     = "crypto-tasks"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.task_namespace))
    error_message = "task_namespace must be a valid Kubernetes namespace name (RFC 1123 label)."
  }
}

variable "airflow_namespace" {
  description = "Kubernetes namespace of the Airflow release (docs/architecture.md: airflow)."
  type        = string
  default     = "airflow"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.airflow_namespace))
    error_message = "airflow_namespace must be a valid Kubernetes namespace name (RFC 1123 label)."
  }
}

variable "airflow_release_name" {
  description = "Helm release name of the official Airflow chart; its service accounts are named <release>-<component> (airflow-worker, airflow-scheduler, ...)."
  type        = string
  default     = "airflow"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.airflow_release_name))
    error_message = "airflow_release_name must be a valid Helm release name (lowercase letters, digits, hyphens; at most 40 characters)."
  }
}

variable "airflow_components" {
  description = "Airflow chart components that get the Airflow role (service account <release>-<component>): workers run the alert task and write task logs, the triggerer writes deferred-task logs, the API server reads logs."
  type        = list(string)
  default     = ["worker", "triggerer", "scheduler", "api-server", "dag-processor"]

  validation {
    condition     = length(var.airflow_components) > 0 && alltrue([for c in var.airflow_components : contains(["worker", "worker-kubernetes", "triggerer", "scheduler", "api-server", "dag-processor", "webserver"], c)])
    error_message = "airflow_components must be a non-empty subset of worker, worker-kubernetes, triggerer, scheduler, api-server, dag-processor, webserver."
  }
}

variable "airflow_logs_prefix" {
  description = "Key prefix of Airflow task logs in the logs bucket (remote_base_log_folder = s3://<bucket>/<prefix>)."
  type        = string
  default     = "logs/"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]*/$", var.airflow_logs_prefix))
    error_message = "airflow_logs_prefix must be a non-empty key prefix ending with a slash, for example logs/."
  }
}

variable "external_secrets_namespace" {
  description = "Namespace of the External Secrets Operator."
  type        = string
  default     = "external-secrets"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.external_secrets_namespace))
    error_message = "external_secrets_namespace must be a valid Kubernetes namespace name (RFC 1123 label)."
  }
}

variable "external_secrets_service_account" {
  description = "Service account of the External Secrets Operator controller (the chart's default for release external-secrets)."
  type        = string
  default     = "external-secrets"

  validation {
    condition     = can(regex("^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$", var.external_secrets_service_account))
    error_message = "external_secrets_service_account must be a valid Kubernetes service account name."
  }
}
