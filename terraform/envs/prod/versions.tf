terraform {
  # S3-native state locking (use_lockfile) is generally available from Terraform 1.11.
  required_version = ">= 1.11, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.95, < 6.0"
    }
  }
}
