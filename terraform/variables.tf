variable "region" {
  description = "AWS region for the bucket, the registry and the training jobs."
  type        = string
  default     = "us-east-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "name" {
  description = "Prefix of every resource name (bucket, repository, role)."
  type        = string
  default     = "model-lib"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket for the DVC remote, checkpoints, job outputs and MLflow artefacts (globally unique)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "checkpoint_expiry_days" {
  description = "Days after which objects under checkpoints/ expire (a finished job's checkpoints are no longer needed)."
  type        = number
  default     = 14
  validation {
    condition     = var.checkpoint_expiry_days >= 1 && var.checkpoint_expiry_days <= 3650
    error_message = "checkpoint_expiry_days must be between 1 and 3650."
  }
}

variable "untagged_image_expiry_days" {
  description = "Days after which untagged images in the ECR repository are deleted."
  type        = number
  default     = 7
  validation {
    condition     = var.untagged_image_expiry_days >= 1
    error_message = "untagged_image_expiry_days must be at least 1."
  }
}

variable "kept_image_count" {
  description = "Number of tagged images the ECR lifecycle policy keeps."
  type        = number
  default     = 30
  validation {
    condition     = var.kept_image_count >= 1
    error_message = "kept_image_count must be at least 1."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = { project = "model-lib" }
}

variable "mlflow_tracking_server_arn" {
  description = "ARN of a SageMaker managed MLflow tracking server the training jobs log to (MLFLOW_TRACKING_URI=<this ARN>). When set, the training role may log runs, logged models and model versions on that server only; empty grants nothing."
  type        = string
  default     = ""
  validation {
    condition     = var.mlflow_tracking_server_arn == "" || can(regex("^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:mlflow-tracking-server/.+", var.mlflow_tracking_server_arn))
    error_message = "mlflow_tracking_server_arn must be empty or arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>."
  }
}

variable "mlflow_artifact_store_uri" {
  description = "Artifact store of that tracking server (its ArtifactStoreUri, s3://bucket/prefix): the jobs write artifacts there directly. When set, the training role may put and get objects under the prefix and list it; empty grants nothing."
  type        = string
  default     = ""
  validation {
    condition     = var.mlflow_artifact_store_uri == "" || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.mlflow_artifact_store_uri))
    error_message = "mlflow_artifact_store_uri must be empty or s3://<bucket>[/<prefix>]."
  }
}

variable "mlflow_auth_secret_arn" {
  description = "Full ARN (with its 6-character suffix) of the Secrets Manager secret holding credentials for a self-hosted MLflow server (the job's --mlflow-secret). When set, the training role may read that one secret (secretsmanager:GetSecretValue); empty grants nothing."
  type        = string
  default     = ""
  validation {
    condition     = var.mlflow_auth_secret_arn == "" || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+", var.mlflow_auth_secret_arn))
    error_message = "mlflow_auth_secret_arn must be empty or arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>."
  }
}

variable "notifications" {
  description = "Create an SNS topic (KMS-encrypted) and an EventBridge rule that publishes to it when a training job completes, fails or stops. Off by default; setting notification_email also turns it on."
  type        = bool
  default     = false
}

variable "notification_email" {
  description = "E-mail address subscribed to the notifications topic (AWS sends a confirmation link first). Empty subscribes nobody; when set, notifications are on."
  type        = string
  default     = ""
  validation {
    condition     = var.notification_email == "" || can(regex("^[^@[:space:]]+@[^@[:space:]]+\\.[^@[:space:]]+$", var.notification_email))
    error_message = "notification_email must be empty or an e-mail address (name@example.com)."
  }
}

variable "notification_job_name_prefix" {
  description = "Only training jobs whose names start with this are notified. The default matches the names `model-lib launch` and the dvc stage give their jobs (model-lib-<timestamp>, model-lib-train-<digest>-<attempt>); empty notifies every training job in the account and region."
  type        = string
  default     = "model-lib-"
  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{0,63}$", var.notification_job_name_prefix))
    error_message = "notification_job_name_prefix must be empty or up to 63 letters, digits and hyphens (as training job names are)."
  }
}

variable "enable_hosting" {
  description = "Let the SageMaker execution role serve models (`model-lib deploy`): write endpoint and transform-job logs and metrics, and read batch-transform input and write its output under s3://<bucket_name>/batch/. The model archives (jobs/) and the image are readable already. Off by default: training alone needs none of it."
  type        = bool
  default     = false
}
