resource "aws_s3_bucket_lifecycle_configuration" "datalake" {
  bucket = aws_s3_bucket.this["datalake"].id

  # Backstop of the archive stage's retention: working objects expire retention + grace days after
  # creation (the stage normally deletes them at `retention_working_days`).
  dynamic "rule" {
    for_each = local.working_prefixes

    content {
      id     = "expire-${trimsuffix(rule.value, "/")}"
      status = "Enabled"

      filter {
        prefix = rule.value
      }

      expiration {
        days = var.retention_working_days + var.lifecycle_grace_days
      }

      noncurrent_version_expiration {
        noncurrent_days = var.noncurrent_version_expiration_days
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }

  # Lineage manifests are kept, in a cheaper class once they are rarely read.
  rule {
    id     = "manifests-to-infrequent-access"
    status = "Enabled"

    filter {
      prefix = "manifests/"
    }

    transition {
      days          = 30
      storage_class = "STANDARD_IA"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.this["archive"].id

  # Write-once copies of raw responses: never expire, move to Glacier tiers.
  rule {
    id     = "archive-to-glacier"
    status = "Enabled"

    filter {}

    transition {
      days          = var.archive_glacier_ir_days
      storage_class = "GLACIER_IR"
    }

    transition {
      days          = var.archive_deep_archive_days
      storage_class = "DEEP_ARCHIVE"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "airflow_logs" {
  bucket = aws_s3_bucket.this["airflow_logs"].id

  rule {
    id     = "expire-airflow-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.airflow_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}
