data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id

  # The buckets that hold pipeline data or Airflow logs. All share the same hardening below; each has its
  # own lifecycle (lifecycle.tf). The access-logs bucket is separate (access_logs.tf): S3 server access
  # logging cannot deliver into an SSE-KMS bucket.
  buckets = {
    datalake     = "${var.name}-datalake-${local.account_id}"
    archive      = "${var.name}-archive-${local.account_id}"
    airflow_logs = "${var.name}-airflow-logs-${local.account_id}"
  }

  # Working prefixes of the data lake (docs/architecture.md, "Storage layout"): the archive stage deletes
  # objects older than retention.working_days under these; manifests/ is lineage and is kept.
  working_prefixes = ["raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/"]
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets
  #checkov:skip=CKV_AWS_144:Cross-region replication is an organisation-level DR choice; data is versioned, KMS-encrypted and the archive bucket keeps write-once copies in Glacier tiers.
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications: the pipeline is scheduled by Airflow, not triggered by object events.

  bucket        = each.value
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = each.value, Purpose = each.key })
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = local.buckets

  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.s3.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each = local.buckets

  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets

  bucket = aws_s3_bucket.this[each.key].id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  # A bucket policy applied before the public access block could be judged public and be refused.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
