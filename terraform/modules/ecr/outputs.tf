output "registry" {
  description = "Registry prefix of the images, <account>.dkr.ecr.<region>.amazonaws.com[/<namespace>]: PIPELINE_IMAGE_REGISTRY and the charts' image registry."
  value       = var.repository_namespace == "" ? local.registry : "${local.registry}/${var.repository_namespace}"
}

output "registry_host" {
  description = "Registry host for `docker login` / `aws ecr get-login-password`."
  value       = local.registry
}

output "repository_urls" {
  description = "Repository URL per image name."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  description = "Repository ARN per image name (for CI push permissions)."
  value       = { for k, r in aws_ecr_repository.this : k => r.arn }
}
