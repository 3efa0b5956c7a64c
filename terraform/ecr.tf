resource "aws_ecr_repository" "training" {
  name = "${var.name}-training"
  # Tags are immutable: an image tag (cpu-<git sha>, gpu-<git sha>) always names the same bytes, so a
  # training job's image is reproducible. `make docker-push` tags with the commit for that reason.
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "AES256"
  }
  # checkov:skip=CKV_AWS_136: AES256 (AWS-managed) encryption is used; a customer-managed KMS key is optional hardening.
}

resource "aws_ecr_lifecycle_policy" "training" {
  repository = aws_ecr_repository.training.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Delete untagged images"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_image_expiry_days
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest tagged images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.kept_image_count
        }
        action = { type = "expire" }
      },
    ]
  })
}
