data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

data "aws_region" "current" {}

locals {
  azs = length(var.availability_zones) == 3 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, 3)

  # /16 -> three /18 private subnets (nodes and pods share them with the VPC CNI), then /24s for public
  # (NAT gateways, internet-facing load balancers) and database subnets in the last /18.
  private_subnets  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 2, i)]
  public_subnets   = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 192 + i)]
  database_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 200 + i)]
}

module "vpc" {
  #checkov:skip=CKV_TF_1:Registry module pinned by a version constraint, as terraform-aws-modules users expect; the Terraform registry serves immutable versions and the lock file pins providers.
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.21"

  name = var.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets  = local.private_subnets
  public_subnets   = local.public_subnets
  database_subnets = local.database_subnets

  create_database_subnet_group       = false # modules/rds owns its subnet group
  create_database_subnet_route_table = true

  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway

  enable_dns_hostnames = true
  enable_dns_support   = true

  # The default security group allows nothing.
  manage_default_security_group  = true
  default_security_group_ingress = []
  default_security_group_egress  = []

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_max_aggregation_interval               = 60
  flow_log_cloudwatch_log_group_retention_in_days = var.flow_log_retention_days

  public_subnet_tags = {
    "kubernetes.io/role/elb"                    = "1"
    "kubernetes.io/cluster/${var.cluster_name}" = "shared"
  }

  private_subnet_tags = {
    "kubernetes.io/role/internal-elb"           = "1"
    "kubernetes.io/cluster/${var.cluster_name}" = "shared"
  }

  tags = var.tags
}

# S3 traffic of the pipeline stays inside AWS (and skips the NAT gateway charges).
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = module.vpc.vpc_id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat(module.vpc.private_route_table_ids, module.vpc.database_route_table_ids)

  tags = merge(var.tags, { Name = "${var.name}-s3" })
}
