output "vpc_id" {
  description = "ID of the VPC."
  value       = module.vpc.vpc_id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC."
  value       = module.vpc.vpc_cidr_block
}

output "azs" {
  description = "The three Availability Zones in use."
  value       = local.azs
}

output "private_subnet_ids" {
  description = "Private subnets (one per zone) for EKS nodes and pods."
  value       = module.vpc.private_subnets
}

output "public_subnet_ids" {
  description = "Public subnets (one per zone) for NAT gateways and internet-facing load balancers."
  value       = module.vpc.public_subnets
}

output "database_subnet_ids" {
  description = "Isolated database subnets (one per zone) for RDS."
  value       = module.vpc.database_subnets
}

output "database_subnet_cidrs" {
  description = "IPv4 CIDRs of the database subnets (for network policies allowing egress to PostgreSQL)."
  value       = module.vpc.database_subnets_cidr_blocks
}

output "nat_public_ips" {
  description = "Public IPs of the NAT gateways (egress addresses of the cluster, e.g. for allow-lists)."
  value       = module.vpc.nat_public_ips
}
