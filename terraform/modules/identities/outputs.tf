output "role_arns" {
  description = "IAM role ARN per workload (ingest, validate, transform, archive, airflow, external_secrets)."
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}

output "role_names" {
  description = "IAM role name per workload."
  value       = { for k, r in aws_iam_role.this : k => r.name }
}

output "service_accounts" {
  description = "Kubernetes identities bound to each role: namespace and service account names (the charts must use exactly these)."
  value       = local.workloads
}

output "s3_access" {
  description = "The S3 access design per workload: bucket -> read/write/delete key prefixes."
  value       = local.s3_access
}

output "pod_identity_association_ids" {
  description = "EKS Pod Identity association id per <workload>/<service account>."
  value       = { for k, a in aws_eks_pod_identity_association.this : k => a.association_id }
}
