output "datalake_bucket_name" {
  description = "Name of the data-lake bucket (storage.uri = s3://<name>)."
  value       = aws_s3_bucket.this["datalake"].id
}

output "datalake_bucket_arn" {
  description = "ARN of the data-lake bucket."
  value       = aws_s3_bucket.this["datalake"].arn
}

output "archive_bucket_name" {
  description = "Name of the archive bucket (storage.archive_uri = s3://<name>/archive)."
  value       = aws_s3_bucket.this["archive"].id
}

output "archive_bucket_arn" {
  description = "ARN of the archive bucket."
  value       = aws_s3_bucket.this["archive"].arn
}

output "airflow_logs_bucket_name" {
  description = "Name of the bucket for Airflow remote task logs (remote_base_log_folder = s3://<name>/logs)."
  value       = aws_s3_bucket.this["airflow_logs"].id
}

output "airflow_logs_bucket_arn" {
  description = "ARN of the Airflow logs bucket."
  value       = aws_s3_bucket.this["airflow_logs"].arn
}

output "access_logs_bucket_name" {
  description = "Name of the bucket receiving S3 server access logs of the other buckets."
  value       = aws_s3_bucket.access_logs.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the data-lake, archive and Airflow logs buckets."
  value       = aws_kms_key.s3.arn
}

output "working_prefixes" {
  description = "Working prefixes of the data lake that expire after the retention period."
  value       = local.working_prefixes
}
