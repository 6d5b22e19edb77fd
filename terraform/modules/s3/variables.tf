variable "name" {
  description = "Name prefix of every resource (for example `cryptopipe-dev`); bucket names append a purpose and the account id."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (it becomes part of S3 bucket names)."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "retention_working_days" {
  description = "Days the working prefixes (raw/, staging/, validated/, ...) are kept; the archive stage deletes older objects (config key retention.working_days). Keep equal to the pipeline setting."
  type        = number
  default     = 120

  validation {
    condition     = var.retention_working_days >= 7 && var.retention_working_days <= 3650 && floor(var.retention_working_days) == var.retention_working_days
    error_message = "retention_working_days must be a whole number of days between 7 and 3650."
  }
}

variable "lifecycle_grace_days" {
  description = "Extra days after retention_working_days before the S3 lifecycle expires working objects itself: a backstop for a retention run that did not happen, never ahead of the archive stage."
  type        = number
  default     = 14

  validation {
    condition     = var.lifecycle_grace_days >= 1 && var.lifecycle_grace_days <= 365 && floor(var.lifecycle_grace_days) == var.lifecycle_grace_days
    error_message = "lifecycle_grace_days must be a whole number of days between 1 and 365."
  }
}

variable "archive_glacier_ir_days" {
  description = "Days after which archive objects move to S3 Glacier Instant Retrieval."
  type        = number
  default     = 30

  validation {
    condition     = var.archive_glacier_ir_days >= 30
    error_message = "archive_glacier_ir_days must be at least 30 (minimum storage duration of the Standard class before a transition)."
  }
}

variable "archive_deep_archive_days" {
  description = "Days after which archive objects move to S3 Glacier Deep Archive; must be at least 90 days after the Glacier Instant Retrieval transition."
  type        = number
  default     = 180

  validation {
    condition     = var.archive_deep_archive_days >= var.archive_glacier_ir_days + 90
    error_message = "archive_deep_archive_days must be at least archive_glacier_ir_days + 90 (minimum storage duration of Glacier Instant Retrieval)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept in the versioned buckets before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && var.noncurrent_version_expiration_days <= 3650
    error_message = "noncurrent_version_expiration_days must be between 1 and 3650."
  }
}

variable "airflow_log_retention_days" {
  description = "Days Airflow task logs are kept in the Airflow logs bucket."
  type        = number
  default     = 90

  validation {
    condition     = var.airflow_log_retention_days >= 1 && var.airflow_log_retention_days <= 3650
    error_message = "airflow_log_retention_days must be between 1 and 3650."
  }
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept in the access-logs bucket."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 1 && var.access_log_retention_days <= 3650
    error_message = "access_log_retention_days must be between 1 and 3650."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets. Leave false outside throw-away environments: it deletes the data lake and the archive."
  type        = bool
  default     = false
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the S3 KMS key is deleted after it is scheduled for deletion."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "kms_deletion_window_in_days must be between 7 and 30 (the AWS KMS limits)."
  }
}
