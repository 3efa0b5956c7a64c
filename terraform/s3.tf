# One bucket, four prefixes: dvc/ (the DVC remote), checkpoints/, jobs/ (model.tar.gz and outputs),
# code/ (submitted entry point) and mlflow/ (artefacts the MLflow server proxies).
resource "aws_s3_bucket" "ml" {
  bucket = var.bucket_name
  # checkov:skip=CKV_AWS_144: cross-region replication is a cost/DR decision left to the user; the DVC remote can be re-pushed.
  # checkov:skip=CKV_AWS_18: access logging needs a second log bucket; CloudTrail data events are the documented alternative.
  # checkov:skip=CKV2_AWS_62: no consumer listens for S3 event notifications in this setup.
  # checkov:skip=CKV_AWS_145: SSE-S3 (AES256) is used so that SageMaker, DVC and MLflow need no KMS grants; switch to aws:kms with a CMK if policy requires.
}

resource "aws_s3_bucket_versioning" "ml" {
  bucket = aws_s3_bucket.ml.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "ml" {
  bucket = aws_s3_bucket.ml.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "ml" {
  bucket                  = aws_s3_bucket.ml.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "ml" {
  bucket = aws_s3_bucket.ml.id

  rule {
    id     = "expire-old-checkpoints"
    status = "Enabled"
    filter {
      prefix = "checkpoints/"
    }
    expiration {
      days = var.checkpoint_expiry_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.ml.arn,
      "${aws_s3_bucket.ml.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  bucket     = aws_s3_bucket.ml.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.ml]
}
