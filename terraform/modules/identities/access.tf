# The access design: which key prefixes each workload may read, write and delete, per bucket.
# This table is the single source of the S3 policies below and is asserted by tests/terraform.
#
# - Writers of write-once objects (ingest: raw/, archive: archive/) also read them: a rerun compares the
#   existing object's bytes before reporting CONFLICT (exit 9), and HeadObject needs s3:GetObject.
# - Every stage writes its run record under runs/ (the record of what it did); archive reads them all.
# - validate deletes what a rerun or a failed rerun supersedes: its own validated/quarantine/Data Docs objects
#   and the day's compaction (rebuilt by the next transform, which writes validated/market_snapshots_daily/).
# - The daily layout of backfills (`run --batch --daily`): a day's run replaces the hourly objects an earlier hourly
#   run left for that day (validate: validated/quarantine/quality, transform: analytics/indicators/, alerts/,
#   reports/), which it lists first (listing needs the read grant of the prefix); validate, transform and archive
#   read runs/daily/ to refuse an hourly run on a day written daily.
# - Archive deletes only in the working prefixes (retention.working_days); never manifests/, runs/ nor anything
#   in the archive bucket.
# tests/security/test_storage_access_matches_iam.py runs the stages and checks every storage call against this.
locals {
  working_prefixes = ["raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/"]

  s3_access = {
    ingest = {
      datalake = {
        read   = ["raw/"]
        write  = ["raw/", "staging/", "runs/"]
        delete = []
      }
    }
    validate = {
      datalake = {
        read   = ["staging/", "validated/", "quarantine/", "quality/", "runs/daily/"]
        write  = ["validated/", "quarantine/", "quality/", "runs/"]
        delete = ["validated/", "quarantine/", "quality/"]
      }
    }
    transform = {
      datalake = {
        read   = ["validated/", "quality/", "analytics/indicators/", "alerts/", "reports/", "runs/daily/"]
        write  = ["validated/market_snapshots_daily/", "analytics/", "alerts/", "reports/", "runs/"]
        delete = ["analytics/indicators/", "alerts/", "reports/"]
      }
    }
    archive = {
      datalake = {
        read   = ["raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/", "manifests/", "runs/"]
        write  = ["manifests/", "runs/"]
        delete = ["raw/", "staging/", "validated/", "quarantine/", "quality/", "analytics/", "alerts/", "reports/"]
      }
      archive = {
        read   = ["archive/"]
        write  = ["archive/"]
        delete = []
      }
    }
    airflow = {
      datalake = {
        read   = ["alerts/"]
        write  = []
        delete = []
      }
      airflow_logs = {
        read   = [var.airflow_logs_prefix]
        write  = [var.airflow_logs_prefix]
        delete = []
      }
    }
  }

  # Object-level actions per kind of access. No wildcards: each action is named.
  s3_actions = {
    read   = ["s3:GetObject"]
    write  = ["s3:PutObject", "s3:AbortMultipartUpload"]
    delete = ["s3:DeleteObject"]
  }

  bucket_arns = {
    datalake     = var.datalake_bucket_arn
    archive      = var.archive_bucket_arn
    airflow_logs = var.airflow_logs_bucket_arn
  }

  # Kubernetes identities of each workload (docs/architecture.md, "Deployment names").
  workloads = {
    ingest    = { namespace = var.task_namespace, service_accounts = ["cryptopipe-ingest"] }
    validate  = { namespace = var.task_namespace, service_accounts = ["cryptopipe-validate"] }
    transform = { namespace = var.task_namespace, service_accounts = ["cryptopipe-transform"] }
    archive   = { namespace = var.task_namespace, service_accounts = ["cryptopipe-archive"] }
    airflow = {
      namespace        = var.airflow_namespace
      service_accounts = [for c in var.airflow_components : "${var.airflow_release_name}-${c}"]
    }
    external_secrets = {
      namespace        = var.external_secrets_namespace
      service_accounts = [var.external_secrets_service_account]
    }
  }

  # One IAM statement per (bucket, kind of access) that has prefixes, e.g. WriteDatalake.
  s3_object_statements = {
    for w, buckets in local.s3_access : w => flatten([
      for b, kinds in buckets : [
        for kind, prefixes in kinds : {
          sid       = "${title(kind)}${replace(title(replace(b, "_", " ")), " ", "")}"
          actions   = local.s3_actions[kind]
          resources = [for p in prefixes : "${local.bucket_arns[b]}/${p}*"]
        } if length(prefixes) > 0
      ]
    ])
  }

  # Listing is allowed on the bucket, narrowed to the prefixes the workload may read.
  s3_list_statements = {
    for w, buckets in local.s3_access : w => [
      for b, kinds in buckets : {
        sid      = "List${replace(title(replace(b, "_", " ")), " ", "")}"
        resource = local.bucket_arns[b]
        prefixes = flatten([for p in kinds.read : [p, "${p}*"]])
      } if length(kinds.read) > 0
    ]
  }

  s3_writers = toset([for w, buckets in local.s3_access : w if anytrue([for b, kinds in buckets : length(kinds.write) > 0])])
}
