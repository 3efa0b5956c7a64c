# The SageMaker execution role: least privilege, no *FullAccess managed policies.
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "sagemaker_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
  }
}

# The MLflow tracking server's S3 artifact store, split into bucket and prefix (no trailing slash).
locals {
  mlflow_artifact_store = var.mlflow_artifact_store_uri == "" ? [] : [{
    bucket = regex("^s3://([^/]+)", var.mlflow_artifact_store_uri)[0]
    prefix = trim(replace(var.mlflow_artifact_store_uri, "/^s3://[^/]+/", ""), "/")
  }]
}

resource "aws_iam_role" "sagemaker" {
  name               = "${var.name}-sagemaker-training"
  assume_role_policy = data.aws_iam_policy_document.sagemaker_trust.json
}

data "aws_iam_policy_document" "sagemaker" {
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.ml.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["dvc/*", "code/*", "checkpoints/*", "jobs/*"]
    }
  }
  statement {
    sid       = "ReadInputsAndCode"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.ml.arn}/dvc/*", "${aws_s3_bucket.ml.arn}/code/*"]
  }
  statement {
    sid     = "WriteCheckpointsAndOutputs"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${aws_s3_bucket.ml.arn}/checkpoints/*",
      "${aws_s3_bucket.ml.arn}/jobs/*",
    ]
  }
  statement {
    sid       = "PullTrainingImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.training.arn]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions
  }
  statement {
    sid     = "TrainingLogs"
    actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [
      "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/TrainingJobs",
      "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/TrainingJobs:log-stream:*",
    ]
  }
  statement {
    sid       = "TrainingMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions; limited by namespace below
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["/aws/sagemaker/TrainingJobs"]
    }
  }

  # Optional statements below: each exists only when its variable is set (for_each over [] adds nothing).

  # SageMaker managed MLflow: what a training job calls to log a run, a logged model and register a
  # model version (MLflow 3 client calls made by model_lib/tracking.py). Action names are from the AWS Service Authorization Reference, "Actions
  # defined by Amazon SageMaker with MLflow" (service prefix sagemaker-mlflow); the REST calls were
  # recorded against an MLflow 3.17 server: experiments/get-by-name, experiments/create, runs/create,
  # runs/get, runs/update (also set_terminated), runs/log-batch (params, tags, metrics), runs/set-tag,
  # metrics/get-history, logged-models (create), runs/outputs, logged-models/<id> (get, finalize),
  # logged-models/<id>/tags, registered-models/create, model-versions/create. The reference has no
  # CreateLoggedModel action: creating a logged model is authorised as LogModel (as AWS's MLflow 3
  # samples grant it). GetModelVersion: the client polls it while a new version is PENDING_REGISTRATION.
  # SearchModelVersions: a restarted job checks its run was not registered already; SetExperimentTag:
  # an existing experiment gets mlflow.experimentKind (the UI's model-training view).
  # Artifacts go straight to S3 (statements below), not through this API; no AccessUI, Search*,
  # Delete* or Update*Experiment/Model.
  dynamic "statement" {
    for_each = var.mlflow_tracking_server_arn == "" ? [] : [var.mlflow_tracking_server_arn]
    content {
      sid = "MlflowTrackingServer"
      actions = [
        "sagemaker-mlflow:GetExperimentByName",
        "sagemaker-mlflow:CreateExperiment",
        "sagemaker-mlflow:CreateRun",
        "sagemaker-mlflow:GetRun",
        "sagemaker-mlflow:UpdateRun",
        "sagemaker-mlflow:LogBatch",
        "sagemaker-mlflow:SetTag",
        "sagemaker-mlflow:GetMetricHistory",
        "sagemaker-mlflow:LogModel",
        "sagemaker-mlflow:LogOutputs",
        "sagemaker-mlflow:GetLoggedModel",
        "sagemaker-mlflow:FinalizeLoggedModel",
        "sagemaker-mlflow:SetLoggedModelTags",
        "sagemaker-mlflow:CreateRegisteredModel",
        "sagemaker-mlflow:CreateModelVersion",
        "sagemaker-mlflow:GetModelVersion",
        "sagemaker-mlflow:SearchModelVersions",
        "sagemaker-mlflow:SetExperimentTag",
      ]
      resources = [statement.value]
    }
  }

  # The tracking server's artifact store: the MLflow client writes (and reads back) artifacts there itself.
  dynamic "statement" {
    for_each = local.mlflow_artifact_store
    content {
      sid       = "MlflowArtifactObjects"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${statement.value.bucket}/${statement.value.prefix == "" ? "" : "${statement.value.prefix}/"}*"]
    }
  }
  dynamic "statement" {
    for_each = local.mlflow_artifact_store
    content {
      sid       = "MlflowArtifactList"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${statement.value.bucket}"]
      dynamic "condition" {
        for_each = statement.value.prefix == "" ? [] : [statement.value.prefix]
        content {
          test     = "StringLike"
          variable = "s3:prefix"
          values   = [condition.value, "${condition.value}/*"]
        }
      }
    }
  }

  # Hosting (`model-lib deploy`, only with enable_hosting): an endpoint's or a transform job's container
  # runs with this role. It pulls the image and reads the job's model.tar.gz with the grants above
  # (PullTrainingImage, jobs/*); what it adds is its own logs and metrics, and a batch transform's
  # input and output, which must be under batch/ in the bucket.
  dynamic "statement" {
    for_each = var.enable_hosting ? [1] : []
    content {
      sid     = "HostingLogs"
      actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      resources = [
        "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/Endpoints/*",
        "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/TransformJobs",
        "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/TransformJobs:log-stream:*",
      ]
    }
  }
  dynamic "statement" {
    for_each = var.enable_hosting ? [1] : []
    content {
      sid       = "HostingMetrics"
      actions   = ["cloudwatch:PutMetricData"]
      resources = ["*"] # PutMetricData has no resource-level permissions; limited by namespace below
      condition {
        test     = "StringEquals"
        variable = "cloudwatch:namespace"
        values   = ["/aws/sagemaker/Endpoints", "/aws/sagemaker/TransformJobs"]
      }
    }
  }
  dynamic "statement" {
    for_each = var.enable_hosting ? [1] : []
    content {
      sid       = "BatchTransformList"
      actions   = ["s3:ListBucket"]
      resources = [aws_s3_bucket.ml.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["batch/*"]
      }
    }
  }
  dynamic "statement" {
    for_each = var.enable_hosting ? [1] : []
    content {
      sid       = "BatchTransformObjects"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
      resources = ["${aws_s3_bucket.ml.arn}/batch/*"]
    }
  }

  # Credentials of a self-hosted MLflow server, read by the job at start (model_lib/tracking.py).
  # Exactly this secret. No kms:Decrypt: a secret encrypted with the default AWS managed key
  # (aws/secretsmanager) is decrypted by Secrets Manager on the caller's behalf; a secret under a
  # customer managed key would also need kms:Decrypt on that key.
  dynamic "statement" {
    for_each = var.mlflow_auth_secret_arn == "" ? [] : [var.mlflow_auth_secret_arn]
    content {
      sid       = "MlflowAuthSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "${var.name}-training"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker.json
}
