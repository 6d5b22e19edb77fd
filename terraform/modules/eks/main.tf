data "aws_partition" "current" {}

module "eks" {
  #checkov:skip=CKV_TF_1:Registry module pinned by a version constraint, as terraform-aws-modules users expect; the Terraform registry serves immutable versions and the lock file pins providers.
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 20.37"

  cluster_name    = var.cluster_name
  cluster_version = var.kubernetes_version

  vpc_id     = var.vpc_id
  subnet_ids = var.private_subnet_ids

  # Private endpoint always; public endpoint only on request and only from listed CIDRs.
  cluster_endpoint_private_access      = true
  cluster_endpoint_public_access       = var.endpoint_public_access
  cluster_endpoint_public_access_cidrs = var.endpoint_public_access_cidrs

  # Control-plane logging, all five log types.
  cluster_enabled_log_types              = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
  cloudwatch_log_group_retention_in_days = var.cluster_log_retention_days

  # Kubernetes Secrets encrypted with a customer-managed KMS key created by the module.
  create_kms_key            = true
  enable_kms_key_rotation   = true
  cluster_encryption_config = { resources = ["secrets"] }

  # Workloads get AWS credentials through EKS Pod Identity (modules/identities), not IRSA.
  enable_irsa = false

  authentication_mode                      = "API"
  enable_cluster_creator_admin_permissions = true
  access_entries = {
    for i, arn in var.admin_principal_arns : "admin-${i}" => {
      principal_arn = arn
      policy_associations = {
        admin = {
          policy_arn   = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
          access_scope = { type = "cluster" }
        }
      }
    }
  }

  bootstrap_self_managed_addons = false
  cluster_addons = {
    vpc-cni                = { most_recent = true, before_compute = true }
    eks-pod-identity-agent = { most_recent = true, before_compute = true }
    kube-proxy             = { most_recent = true }
    coredns                = { most_recent = true }
    aws-ebs-csi-driver = {
      most_recent = true
      # A default gp3 StorageClass for the Airflow chart's persistent volumes (triggerer, workers, redis).
      configuration_values = jsonencode({ defaultStorageClass = { enabled = true } })
    }
  }

  eks_managed_node_groups = {
    for name, g in var.node_groups : name => {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = g.instance_types
      capacity_type  = g.capacity_type
      min_size       = g.min_size
      max_size       = g.max_size
      desired_size   = g.desired_size
      labels         = g.labels

      block_device_mappings = {
        xvda = {
          device_name = "/dev/xvda"
          ebs = {
            volume_size           = g.disk_size_gib
            volume_type           = "gp3"
            encrypted             = true
            delete_on_termination = true
          }
        }
      }

      # IMDSv2 only; hop limit 1 keeps pods off the node role (they use Pod Identity).
      metadata_options = {
        http_endpoint               = "enabled"
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }
    }
  }

  tags = var.tags
}

# The EBS CSI controller gets its AWS permissions through Pod Identity as well.
data "aws_iam_policy_document" "ebs_csi_trust" {
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
      variable = "aws:RequestTag/kubernetes-service-account"
      values   = ["ebs-csi-controller-sa"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = ["kube-system"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.cluster_name}-ebs-csi"
  description        = "${var.cluster_name}: EBS CSI controller (kube-system/ebs-csi-controller-sa) via EKS Pod Identity"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_trust.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

resource "aws_eks_pod_identity_association" "ebs_csi" {
  cluster_name    = module.eks.cluster_name
  namespace       = "kube-system"
  service_account = "ebs-csi-controller-sa"
  role_arn        = aws_iam_role.ebs_csi.arn

  tags = var.tags
}
