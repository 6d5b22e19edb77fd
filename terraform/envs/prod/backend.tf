# Remote state in S3 with S3-native locking (no DynamoDB table). The bucket and region are given at init:
#   terraform init -backend-config=backend.hcl     (copy backend.hcl.example; see docs/deploy-eks.md)
terraform {
  backend "s3" {
    key          = "cryptopipe/prod/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
