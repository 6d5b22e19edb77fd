data "aws_partition" "current" {}
data "aws_region" "current" {}

# Trust: only EKS Pod Identity, only for this cluster, namespace and service account(s). The agent sets
# these session tags on every role it assumes (docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html).
data "aws_iam_policy_document" "trust" {
  for_each = local.workloads

  statement {
    sid     = "AllowEksPodIdentity"
    effect  = "Allow"
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/eks-cluster-name"
      values   = [var.cluster_name]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = [each.value.namespace]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-service-account"
      values   = each.value.service_accounts
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.workloads

  name                 = "${var.name}-${replace(each.key, "_", "-")}"
  description          = "${var.name}: ${each.key} (${each.value.namespace}/${join(",", each.value.service_accounts)}) via EKS Pod Identity"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600

  tags = merge(var.tags, { Workload = each.key })
}

locals {
  policy_json = merge(
    { for k, doc in data.aws_iam_policy_document.s3 : k => doc.json },
    { external_secrets = data.aws_iam_policy_document.external_secrets.json },
  )
}

resource "aws_iam_policy" "this" {
  for_each = local.workloads

  name        = "${var.name}-${replace(each.key, "_", "-")}"
  description = "${var.name}: least-privilege access of the ${each.key} workload"
  policy      = local.policy_json[each.key]

  tags = merge(var.tags, { Workload = each.key })
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = local.workloads

  role       = aws_iam_role.this[each.key].name
  policy_arn = aws_iam_policy.this[each.key].arn
}

# One association per service account: the Pod Identity agent hands the role to pods running as it.
resource "aws_eks_pod_identity_association" "this" {
  for_each = merge([
    for w, spec in local.workloads : {
      for sa in spec.service_accounts : "${w}/${sa}" => { workload = w, namespace = spec.namespace, service_account = sa }
    }
  ]...)

  cluster_name    = var.cluster_name
  namespace       = each.value.namespace
  service_account = each.value.service_account
  role_arn        = aws_iam_role.this[each.value.workload].arn

  tags = merge(var.tags, { Workload = each.value.workload })
}
