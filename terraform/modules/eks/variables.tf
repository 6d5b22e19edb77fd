variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be a valid EKS cluster name (1-100 characters: letters, digits, hyphens, underscores)."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "kubernetes_version" {
  description = "Kubernetes version of the control plane and the managed node groups."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(2[89]|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as 1.33 (1.28 to 1.39)."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc-xxxxxxxx)."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (three zones) for the control-plane network interfaces, the nodes and the pods."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must list at least two subnets in different zones (EKS requirement); three are expected."
  }
}

variable "endpoint_public_access" {
  description = "Also expose the Kubernetes API publicly (restricted to endpoint_public_access_cidrs). The private endpoint is always on; without public access, run kubectl from inside the VPC (VPN, bastion)."
  type        = bool
  default     = false
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint when endpoint_public_access is true; 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "endpoint_public_access_cidrs must be valid IPv4 CIDRs and must not contain 0.0.0.0/0."
  }
}

variable "cluster_log_retention_days" {
  description = "Days the control-plane logs are kept in CloudWatch Logs."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cluster_log_retention_days)
    error_message = "cluster_log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "admin_principal_arns" {
  description = "IAM principals (besides the identity running Terraform) granted cluster-admin through EKS access entries, for example a platform team role."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", a))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
}

variable "node_groups" {
  description = "Managed node groups: `platform` runs Airflow, Argo CD and External Secrets; `tasks` runs the stage pods (label cryptopipe.io/pool=tasks). Sizes are static (no cluster autoscaler)."
  type = map(object({
    instance_types = list(string)
    capacity_type  = optional(string, "ON_DEMAND")
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 50)
    labels         = optional(map(string), {})
  }))
  default = {
    platform = {
      instance_types = ["m6i.large"]
      min_size       = 2
      max_size       = 4
      desired_size   = 2
      labels         = { "cryptopipe.io/pool" = "platform" }
    }
    tasks = {
      instance_types = ["m6i.large"]
      min_size       = 1
      max_size       = 4
      desired_size   = 2
      labels         = { "cryptopipe.io/pool" = "tasks" }
    }
  }

  validation {
    condition = length(var.node_groups) > 0 && alltrue([
      for g in values(var.node_groups) :
      g.min_size >= 0 && g.min_size <= g.desired_size && g.desired_size <= g.max_size && g.max_size >= 1 &&
      contains(["ON_DEMAND", "SPOT"], g.capacity_type) && length(g.instance_types) > 0 && g.disk_size_gib >= 20
    ])
    error_message = "Each node group needs 0 <= min_size <= desired_size <= max_size (max_size >= 1), capacity_type ON_DEMAND or SPOT, at least one instance type and disk_size_gib >= 20."
  }
}
