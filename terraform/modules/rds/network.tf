resource "aws_db_subnet_group" "this" {
  name        = "${var.name}-postgres"
  description = "${var.name}: private subnets of the PostgreSQL instance"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

# Reachable from the listed security groups (the EKS nodes) only; no egress rule (a database does not
# initiate connections), which removes the default allow-all egress.
resource "aws_security_group" "this" {
  name        = "${var.name}-postgres"
  description = "${var.name}: PostgreSQL, reachable from the EKS cluster only"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-postgres" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value

  tags = var.tags
}
