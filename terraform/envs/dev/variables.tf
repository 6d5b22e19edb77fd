variable "region" {
  description = "AWS region of the environment."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region code such as eu-west-1."
  }
}

variable "vpc_cidr" {
  description = "IPv4 /16 CIDR of the VPC; pick one that does not overlap networks you peer with."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(split("/", var.vpc_cidr)[1] == "16", false)
    error_message = "vpc_cidr must be a valid IPv4 CIDR with prefix length 16."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version of the EKS cluster."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(2[89]|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as 1.33."
  }
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API publicly, restricted to endpoint_public_access_cidrs (needed to bootstrap Argo CD from outside the VPC)."
  type        = bool
  default     = false
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint (for example your office or VPN egress /32)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "endpoint_public_access_cidrs must be valid IPv4 CIDRs and must not contain 0.0.0.0/0."
  }
}

variable "admin_principal_arns" {
  description = "Extra IAM roles or users given cluster-admin (the identity running Terraform always is)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", a))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
}

variable "rds_instance_class" {
  description = "Instance class of the PostgreSQL database (Airflow metadata + warehouse)."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.rds_instance_class))
    error_message = "rds_instance_class must look like db.<family>.<size>."
  }
}

variable "retention_working_days" {
  description = "Retention of the data lake's working prefixes in days; keep equal to the pipeline's retention.working_days."
  type        = number
  default     = 120

  validation {
    condition     = var.retention_working_days >= 7 && var.retention_working_days <= 3650
    error_message = "retention_working_days must be between 7 and 3650."
  }
}

variable "extra_tags" {
  description = "Additional tags for every resource (for example CostCenter, Owner)."
  type        = map(string)
  default     = {}
}
