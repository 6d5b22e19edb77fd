data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # Secret containers only: values are put by an operator (docs/deploy-eks.md), never by Terraform, so
  # they never land in the Terraform state. External Secrets maps them to cryptopipe-secrets and to the
  # Secrets the Airflow chart reads.
  secrets = {
    coingecko_api_key = {
      suffix      = "coingecko-api-key"
      description = "CoinGecko API key (CRYPTOPIPE_API__KEY): plain string"
    }
    slack_webhook_url = {
      suffix      = "slack-webhook-url"
      description = "Slack incoming-webhook URL for alerts (CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL and Airflow connection slack_alerts): plain string"
    }
    # Airflow's own secrets (charts/crypto-pipeline values-eks.yaml, airflowSecrets.externalSecrets.static).
    airflow_fernet_key = {
      suffix      = "airflow-fernet-key"
      description = "Airflow Fernet key encrypting connections and variables: plain string"
    }
    airflow_jwt_secret = {
      suffix      = "airflow-jwt-secret"
      description = "Airflow JWT signing secret of the Execution and REST APIs: plain string"
    }
    airflow_api_secret_key = {
      suffix      = "airflow-api-secret-key"
      description = "Airflow API server session secret: plain string"
    }
    airflow_redis_password = {
      suffix      = "airflow-redis-password"
      description = "Celery broker (Redis) password: plain string"
    }
    airflow_broker_url = {
      suffix      = "airflow-broker-url"
      description = "Celery broker URL including the Redis password: plain string"
    }
  }
}

resource "aws_kms_key" "secrets" {
  description             = "${var.name}: Secrets Manager secrets of the pipeline"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account root keeps control of the key so IAM policies (External Secrets' role) can grant
        # kms:Decrypt through Secrets Manager.
        Sid       = "EnableIAMPoliciesInThisAccount"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })

  tags = var.tags
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${var.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.secrets
  #checkov:skip=CKV2_AWS_57:Third-party credentials (CoinGecko key, Slack webhook) and Airflow's keys cannot be rotated by a Secrets Manager rotation Lambda without restarting Airflow; they are rotated by an operator (docs/deploy-eks.md).

  name                    = "${var.name}/${each.value.suffix}"
  description             = each.value.description
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = merge(var.tags, { Purpose = each.key })
}
