output "secret_arns" {
  description = "Secrets Manager secret ARN per purpose (coingecko_api_key, slack_webhook_url, airflow_*)."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "secret_names" {
  description = "Secrets Manager secret name per purpose: the remoteRef keys of the ExternalSecrets."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.name }
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the secrets."
  value       = aws_kms_key.secrets.arn
}
