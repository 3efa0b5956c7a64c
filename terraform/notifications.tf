# Opt-in: tell someone when a training job ends. A SageMaker job can run for hours (or be reclaimed
# as spot capacity) with nobody watching; EventBridge sees every "SageMaker Training Job State Change"
# and this rule forwards the final ones (Completed, Failed, Stopped) of the project's jobs to an SNS
# topic, optionally with an e-mail subscription. Off by default: nothing below exists unless
# notifications = true or notification_email is set.
locals {
  notify = var.notifications || var.notification_email != ""
  # Named here, not read from the rule, so the key and topic policies can name the rule (no cycle).
  notification_rule_name = "${var.name}-training-job-ended"
  notification_rule_arn  = "arn:${data.aws_partition.current.partition}:events:${var.region}:${data.aws_caller_identity.current.account_id}:rule/${local.notification_rule_name}"
  # The launcher names its jobs model-lib-<timestamp> (model-lib launch) and
  # model-lib-train-<digest>-<attempt> (the dvc stage): model_lib/sagemaker/launch.py and remote.py.
  notification_job_filter = var.notification_job_name_prefix == "" ? {} : {
    TrainingJobName = [{ prefix = var.notification_job_name_prefix }]
  }
}

# The topic is encrypted with a key of its own: EventBridge may publish to an encrypted topic only when
# the key policy lets events.amazonaws.com use the key, which the AWS managed key (aws/sns) does not.
# A key policy, written here rather than as an aws_iam_policy_document (whose checks read it as an
# identity policy): "Resource": "*" in a key policy is this key; the account statement is AWS's default
# one (IAM policies in the account decide who may use or manage the key).
resource "aws_kms_key" "notifications" {
  count                   = local.notify ? 1 : 0
  description             = "${var.name}: encrypts the training job notifications topic"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKey"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "EventBridgePublishesToTopic"
        Effect    = "Allow"
        Principal = { Service = "events.amazonaws.com" }
        Action    = ["kms:GenerateDataKey*", "kms:Decrypt"]
        Resource  = "*"
        Condition = { ArnEquals = { "aws:SourceArn" = local.notification_rule_arn } }
      },
    ]
  })
}

resource "aws_kms_alias" "notifications" {
  count         = local.notify ? 1 : 0
  name          = "alias/${var.name}-notifications"
  target_key_id = aws_kms_key.notifications[0].key_id
}

resource "aws_sns_topic" "training_jobs" {
  count             = local.notify ? 1 : 0
  name              = "${var.name}-training-jobs"
  kms_master_key_id = aws_kms_key.notifications[0].arn
}

# Only this account's rule may publish (the topic policy replaces SNS's default one; the account's own
# principals keep what their IAM policies grant).
data "aws_iam_policy_document" "training_jobs_topic" {
  count = local.notify ? 1 : 0
  statement {
    sid       = "EventBridgePublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.training_jobs[0].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [local.notification_rule_arn]
    }
  }
}

resource "aws_sns_topic_policy" "training_jobs" {
  count  = local.notify ? 1 : 0
  arn    = aws_sns_topic.training_jobs[0].arn
  policy = data.aws_iam_policy_document.training_jobs_topic[0].json
}

resource "aws_cloudwatch_event_rule" "training_job_ended" {
  count       = local.notify ? 1 : 0
  name        = local.notification_rule_name
  description = "A SageMaker training job${var.notification_job_name_prefix == "" ? "" : " named ${var.notification_job_name_prefix}*"} completed, failed or stopped."
  event_pattern = jsonencode({
    source        = ["aws.sagemaker"]
    "detail-type" = ["SageMaker Training Job State Change"]
    detail = merge(local.notification_job_filter, {
      TrainingJobStatus = ["Completed", "Failed", "Stopped"]
    })
  })
}

# One readable line per event (an e-mail's body); SecondaryStatus tells a stop apart from a
# spot reclaim that ran out of wait time (MaxWaitTimeExceeded) or a run-time limit (MaxRuntimeExceeded).
resource "aws_cloudwatch_event_target" "training_job_ended" {
  count = local.notify ? 1 : 0
  rule  = aws_cloudwatch_event_rule.training_job_ended[0].name
  arn   = aws_sns_topic.training_jobs[0].arn
  input_transformer {
    input_paths = {
      job       = "$.detail.TrainingJobName"
      status    = "$.detail.TrainingJobStatus"
      secondary = "$.detail.SecondaryStatus"
      region    = "$.region"
    }
    input_template = "\"SageMaker training job <job> ended: <status> (<secondary>). Details: aws sagemaker describe-training-job --region <region> --training-job-name <job>\""
  }
  depends_on = [aws_sns_topic_policy.training_jobs]
}

# E-mail subscriptions stay "pending confirmation" until the address's owner follows the link AWS sends.
resource "aws_sns_topic_subscription" "training_jobs_email" {
  count     = var.notification_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.training_jobs[0].arn
  protocol  = "email"
  endpoint  = var.notification_email
}
