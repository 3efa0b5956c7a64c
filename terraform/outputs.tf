# Read by `model-lib launch` (terraform output -json) and `make docker-push`.
output "bucket_name" {
  description = "S3 bucket: DVC remote under dvc/, checkpoints/, jobs/, code/, mlflow/."
  value       = aws_s3_bucket.ml.bucket
}

output "dvc_remote_url" {
  description = "URL for `dvc remote add -d s3 <url>`."
  value       = "s3://${aws_s3_bucket.ml.bucket}/dvc"
}

output "ecr_repository_url" {
  description = "Repository for the cpu and gpu training images."
  value       = aws_ecr_repository.training.repository_url
}

output "sagemaker_role_arn" {
  description = "Execution role the training jobs assume."
  value       = aws_iam_role.sagemaker.arn
}

output "region" {
  description = "Region of every resource."
  value       = var.region
}

output "mlflow_tracking_server_arn" {
  description = "SageMaker managed MLflow tracking server the role may log to (MLFLOW_TRACKING_URI for the jobs); empty when none."
  value       = var.mlflow_tracking_server_arn
}

output "notification_topic_arn" {
  description = "SNS topic told when a training job completes, fails or stops (subscribe more endpoints to it); empty when notifications are off."
  value       = local.notify ? aws_sns_topic.training_jobs[0].arn : ""
}
