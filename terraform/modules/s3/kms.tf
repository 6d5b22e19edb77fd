# One customer-managed key for the data lake, the archive and the Airflow logs. Workload roles get
# kms:Decrypt / kms:GenerateDataKey through their own IAM policies (modules/identities), limited to S3.
resource "aws_kms_key" "s3" {
  description             = "${var.name}: S3 data lake, archive and Airflow logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account root keeps control of the key so IAM policies can grant its use (and so the key
        # can never become unmanageable).
        Sid       = "EnableIAMPoliciesInThisAccount"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })

  tags = var.tags
}

resource "aws_kms_alias" "s3" {
  name          = "alias/${var.name}-s3"
  target_key_id = aws_kms_key.s3.key_id
}
