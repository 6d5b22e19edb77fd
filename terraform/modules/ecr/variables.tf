variable "name" {
  description = "Name prefix used for the KMS alias of the repositories (for example `cryptopipe-dev`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "repository_namespace" {
  description = "Optional path before the image names, so several environments can share one account: repositories are <namespace>/cryptopipe-<stage> and the registry output ends with /<namespace>. Empty for none."
  type        = string
  default     = ""

  validation {
    condition     = var.repository_namespace == "" || can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*$", var.repository_namespace))
    error_message = "repository_namespace must be empty or lowercase letters and digits separated by '.', '_' or '-'."
  }
}

variable "images" {
  description = "Image names, one repository each (docs/architecture.md: cryptopipe-<stage> and cryptopipe-airflow)."
  type        = list(string)
  default     = ["cryptopipe-ingest", "cryptopipe-validate", "cryptopipe-transform", "cryptopipe-archive", "cryptopipe-airflow"]

  validation {
    condition     = length(var.images) > 0 && alltrue([for i in var.images : can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*$", i))])
    error_message = "images must be a non-empty list of repository names (lowercase letters, digits, '.', '_', '-')."
  }
}

variable "keep_tagged_images" {
  description = "Number of most recent tagged images kept per repository; older ones expire."
  type        = number
  default     = 50

  validation {
    condition     = var.keep_tagged_images >= 1 && var.keep_tagged_images <= 1000
    error_message = "keep_tagged_images must be between 1 and 1000."
  }
}

variable "untagged_expiry_days" {
  description = "Days after which untagged images (failed or superseded pushes) expire."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_expiry_days >= 1 && var.untagged_expiry_days <= 365
    error_message = "untagged_expiry_days must be between 1 and 365."
  }
}

variable "force_delete" {
  description = "Allow `terraform destroy` to delete repositories that still hold images."
  type        = bool
  default     = false
}
