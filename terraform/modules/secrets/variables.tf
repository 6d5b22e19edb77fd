variable "name" {
  description = "Name prefix of the secrets (secret names are <name>/<purpose>, for example cryptopipe-dev/coingecko-api-key)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$", var.name))
    error_message = "name must be 3-32 characters of letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (0 deletes immediately: only for throw-away environments)."
  type        = number
  default     = 30

  validation {
    condition     = var.recovery_window_in_days == 0 || (var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30)
    error_message = "recovery_window_in_days must be 0 or between 7 and 30 (the Secrets Manager limits)."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the secrets' KMS key is deleted after it is scheduled for deletion."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "kms_deletion_window_in_days must be between 7 and 30 (the AWS KMS limits)."
  }
}
