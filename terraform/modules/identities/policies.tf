# S3 access of the pipeline workloads, rendered from local.s3_access (access.tf).
data "aws_iam_policy_document" "s3" {
  for_each = local.s3_access

  dynamic "statement" {
    for_each = local.s3_object_statements[each.key]

    content {
      sid       = statement.value.sid
      effect    = "Allow"
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }

  dynamic "statement" {
    for_each = local.s3_list_statements[each.key]

    content {
      sid       = statement.value.sid
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = [statement.value.resource]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = statement.value.prefixes
      }
    }
  }

  # SSE-KMS: reading needs Decrypt, writing needs GenerateDataKey (and Decrypt for multipart uploads).
  # Usable only by S3 on the caller's behalf.
  statement {
    sid       = "UseS3KmsKeyThroughS3"
    effect    = "Allow"
    actions   = contains(local.s3_writers, each.key) ? ["kms:Decrypt", "kms:GenerateDataKey"] : ["kms:Decrypt"]
    resources = [var.s3_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

# External Secrets reads exactly the listed secrets (CoinGecko key, Slack webhook, RDS master secret)
# and syncs them into Kubernetes Secrets (cryptopipe-secrets, Airflow connections).
data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid       = "ReadPipelineSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = sort(values(var.external_secret_arns))
  }

  statement {
    sid       = "DecryptSecretsThroughSecretsManager"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = var.secrets_kms_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}
