provider "aws" {
  region = var.region

  # Every taggable resource gets these; modules add Name/Purpose/Workload where useful.
  default_tags {
    tags = local.tags
  }
}
