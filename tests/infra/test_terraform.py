"""Terraform, checked with the real tools offline: fmt, validate through the provider mirror, and a
real apply/destroy against a moto server, with boto3 checking what was created."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

MIRROR = Path(os.environ.get("MODEL_LIB_TF_MIRROR", "/opt/tf-plugins"))
HAS_MIRROR = (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir()
HAS_TERRAFORM = shutil.which("terraform") is not None
needs_terraform = pytest.mark.skipif(not HAS_TERRAFORM, reason="terraform is not installed on this machine")
needs_mirror = pytest.mark.skipif(
    not HAS_MIRROR, reason=f"no AWS provider mirror at {MIRROR} (set MODEL_LIB_TF_MIRROR): validate/apply need it offline"
)


def terraform(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["terraform", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"terraform {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture
def workdir(tmp_path):
    """A copy of terraform/ and a CLI config that installs the AWS provider from the local mirror."""
    shutil.copytree(REPO / "terraform", tmp_path / "tf", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    cli = tmp_path / "terraformrc"
    cli.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{MIRROR}"\n    include = ["registry.terraform.io/hashicorp/aws"]\n  }}\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n'
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    # Each terraform command starts the AWS provider up to four times, and each start builds the
    # schemas of its ~1,500 resource types: with Go's collector less eager (GOGC=400) that costs ~35%
    # less CPU (user 7.2 -> 4.7 s per plan on 2 busy cores) for ~150 MB more per provider process.
    env.setdefault("GOGC", "400")
    return tmp_path / "tf", env


@needs_terraform
def test_terraform_files_are_formatted(workdir):
    folder, env = workdir
    terraform("fmt", "-check", "-recursive", cwd=folder, env=env)


@needs_terraform
@needs_mirror
def test_terraform_validates_offline(workdir):
    folder, env = workdir
    terraform("init", "-backend=false", "-input=false", cwd=folder, env=env)
    terraform("validate", cwd=folder, env=env)


@needs_terraform
@needs_mirror
def test_bad_bucket_name_is_refused_by_validation(workdir):
    folder, env = workdir
    terraform("init", "-backend=false", "-input=false", cwd=folder, env=env)
    result = subprocess.run(
        ["terraform", "plan", "-input=false", "-var", "bucket_name=Bad_Name", "-refresh=false"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "bucket_name must be a valid S3 bucket name" in result.stderr


@needs_terraform
@needs_mirror
def test_bad_optional_variables_are_refused_by_validation(workdir):
    """MLflow ARNs and notification settings: each bad value is named at once, in one plan."""
    folder, env = workdir
    terraform("init", "-backend=false", "-input=false", cwd=folder, env=env)
    bad = {
        "mlflow_tracking_server_arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/not-a-server",
        "mlflow_artifact_store_uri": "https://bucket/prefix",
        "mlflow_auth_secret_arn": "model-lib/mlflow",
        "notification_email": "ml-team at example.com",
        "notification_job_name_prefix": "model_lib*",
    }
    args = [a for name, value in bad.items() for a in ("-var", f"{name}={value}")]
    result = subprocess.run(
        ["terraform", "plan", "-input=false", "-refresh=false", "-var", "bucket_name=model-lib-tf-test", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    for name in bad:
        assert f"{name} must be empty or" in result.stderr, name


PREFIX = "model-lib-tf-test"

PROVIDER_OVERRIDE = """
provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = false
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
    s3         = "{url}"
    ecr        = "{url}"
    iam        = "{url}"
    sts        = "{url}"
    sagemaker  = "{url}"
    cloudwatch = "{url}"
    logs       = "{url}"
    events     = "{url}"
    sns        = "{url}"
    kms        = "{url}"
  }}
}}
"""


@needs_terraform
@needs_mirror
@pytest.mark.integration
def test_apply_creates_a_locked_down_bucket_registry_and_role_then_destroys(workdir, aws_env):
    import boto3

    folder, env = workdir
    (folder / "moto_override.tf").write_text(PROVIDER_OVERRIDE.format(url=aws_env))
    env = {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    bucket = "model-lib-tf-test"
    # The moto server is shared by the session's tests (test_launch makes a model-lib-training
    # repository on it), so this apply names its resources with a prefix of its own.
    names = ("-var", f"name={PREFIX}", "-var", f"bucket_name={bucket}")
    terraform("init", "-backend=false", "-input=false", cwd=folder, env=env)
    # Every option on first: the provider waits 55 s for the new bucket lifecycle configuration to read
    # back the same ten times (5 s apart, after 10 s), and the rest (the notification key's own waits
    # among it) is made meanwhile. The second apply, to the defaults, then shows what they leave out.
    terraform("apply", "-auto-approve", "-input=false", *names, *MLFLOW_VARS, *NOTIFY_VARS, *HOSTING_VARS, cwd=folder, env=env)
    try:
        outputs = _outputs(folder, env)
        assert outputs["bucket_name"] == bucket and outputs["dvc_remote_url"] == f"s3://{bucket}/dvc"
        assert outputs["ecr_repository_url"].endswith(f"/{PREFIX}-training")
        _assert_locked_down_bucket(boto3.client("s3"), bucket)
        repository = boto3.client("ecr").describe_repositories(repositoryNames=[f"{PREFIX}-training"])["repositories"][0]
        assert repository["imageScanningConfiguration"]["scanOnPush"] is True
        assert repository["imageTagMutability"] == "IMMUTABLE"

        iam = boto3.client("iam")
        role_name = outputs["sagemaker_role_arn"].rsplit("/", 1)[1]
        trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
        assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []  # no *FullAccess
        (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        _assert_own_grants(document, bucket, repository["repositoryArn"])
        # MLflow variables set: each grant on exactly the resource named.
        _assert_mlflow_grants(document)
        assert outputs["mlflow_tracking_server_arn"] == MLFLOW_SERVER_ARN
        _assert_notifications(outputs["notification_topic_arn"])
        _assert_hosting_grants(document, bucket)

        # The defaults (one in-place update of the inline policy; the notification resources go).
        # -refresh=false: the state is the first apply's, seconds old; refreshing it again costs ~20 s against moto.
        update = terraform("apply", "-auto-approve", "-input=false", "-refresh=false", *names, cwd=folder, env=env)
        assert f"0 added, 1 changed, {len(NOTIFICATION_RESOURCES)} destroyed" in update.stdout
        document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        _assert_own_grants(document, bucket, repository["repositoryArn"])
        outputs = _outputs(folder, env)
        # MLflow variables unset: the role gets nothing for MLflow.
        assert not _mlflow_grants(document) and outputs["mlflow_tracking_server_arn"] == ""
        # Hosting off: none of its statements.
        assert not {s.get("Sid") for s in document["Statement"]} & set(HOSTING_SIDS)
        # Notifications off: none of their resources in the state, nor on the (moto) account.
        state = terraform("state", "list", cwd=folder, env=env).stdout.split()
        topic_policy = "data.aws_iam_policy_document.training_jobs_topic"
        assert not [r for r in state if r.split("[")[0] in {*NOTIFICATION_RESOURCES, topic_policy}], state
        assert outputs["notification_topic_arn"] == ""
        assert boto3.client("events").list_rules(NamePrefix=PREFIX)["Rules"] == []
        assert not [t for t in boto3.client("sns").list_topics()["Topics"] if f":{PREFIX}-" in t["TopicArn"]]
    finally:
        terraform("destroy", "-auto-approve", "-input=false", "-refresh=false", *names, cwd=folder, env=env)
    assert bucket not in [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]


def _outputs(folder, env):
    return {k: v["value"] for k, v in json.loads(terraform("output", "-json", cwd=folder, env=env).stdout).items()}


def _assert_locked_down_bucket(s3, bucket):
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    checkpoints = next(r for r in rules if r["ID"] == "expire-old-checkpoints")
    assert checkpoints["Filter"]["Prefix"] == "checkpoints/" and checkpoints["Expiration"]["Days"] == 14


def _assert_own_grants(document, bucket, repository_arn):
    """The role's own statements (all but the MLflow ones): S3 only on the bucket, ECR pulls only from the repository."""
    own = [s for s in document["Statement"] if not s.get("Sid", "").startswith("Mlflow")]
    s3_resources = [r for s in own if any(a.startswith("s3:") for a in _list(s["Action"])) for r in _list(s["Resource"])]
    assert s3_resources and all(r.startswith(f"arn:aws:s3:::{bucket}") for r in s3_resources)
    ecr_pull = next(s for s in document["Statement"] if s["Sid"] == "PullTrainingImage")
    assert _list(ecr_pull["Resource"]) == [repository_arn]


def _assert_mlflow_grants(document):
    grants = _mlflow_grants(document)
    assert set(grants) == {"MlflowTrackingServer", "MlflowArtifactObjects", "MlflowArtifactList", "MlflowAuthSecret"}
    server = grants["MlflowTrackingServer"]
    assert _list(server["Resource"]) == [MLFLOW_SERVER_ARN]
    assert set(_list(server["Action"])) == MLFLOW_ACTIONS
    secret = grants["MlflowAuthSecret"]
    assert _list(secret["Action"]) == ["secretsmanager:GetSecretValue"] and _list(secret["Resource"]) == [MLFLOW_SECRET_ARN]
    objects, listing = grants["MlflowArtifactObjects"], grants["MlflowArtifactList"]
    assert sorted(_list(objects["Action"])) == ["s3:GetObject", "s3:PutObject"]
    assert _list(objects["Resource"]) == ["arn:aws:s3:::mlflow-artifacts-tf-test/tracking/*"]
    assert _list(listing["Action"]) == ["s3:ListBucket"]
    assert _list(listing["Resource"]) == ["arn:aws:s3:::mlflow-artifacts-tf-test"]
    assert sorted(_list(listing["Condition"]["StringLike"]["s3:prefix"])) == ["tracking", "tracking/*"]


HOSTING_VARS = ("-var", "enable_hosting=true")
HOSTING_SIDS = ("HostingLogs", "HostingMetrics", "BatchTransformList", "BatchTransformObjects")


def _assert_hosting_grants(document, bucket):
    """enable_hosting: endpoint and transform logs and metrics, batch/ objects of the bucket; nothing wider."""
    grants = {s.get("Sid"): s for s in document["Statement"] if s.get("Sid") in HOSTING_SIDS}
    assert set(grants) == set(HOSTING_SIDS)
    logs = _list(grants["HostingLogs"]["Resource"])
    assert all(":log-group:/aws/sagemaker/Endpoints/" in r or ":log-group:/aws/sagemaker/TransformJobs" in r for r in logs)
    namespaces = _list(grants["HostingMetrics"]["Condition"]["StringEquals"]["cloudwatch:namespace"])
    assert sorted(namespaces) == ["/aws/sagemaker/Endpoints", "/aws/sagemaker/TransformJobs"]
    assert _list(grants["BatchTransformObjects"]["Resource"]) == [f"arn:aws:s3:::{bucket}/batch/*"]
    assert _list(grants["BatchTransformList"]["Condition"]["StringLike"]["s3:prefix"]) == ["batch/*"]


def _list(value):
    return value if isinstance(value, list) else [value]


# Fake resources in moto's account: IAM stores policy ARNs without checking they exist.
MLFLOW_SERVER_ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/model-lib-tf-test"
MLFLOW_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:model-lib/mlflow-AbCdEf"
MLFLOW_VARS = (
    *("-var", f"mlflow_tracking_server_arn={MLFLOW_SERVER_ARN}"),
    *("-var", "mlflow_artifact_store_uri=s3://mlflow-artifacts-tf-test/tracking/"),
    *("-var", f"mlflow_auth_secret_arn={MLFLOW_SECRET_ARN}"),
)
# What a job needs to log a run, a logged model and register a model version (see terraform/iam.tf).
MLFLOW_ACTIONS = {
    f"sagemaker-mlflow:{action}"
    for action in (
        "GetExperimentByName",
        "CreateExperiment",
        "CreateRun",
        "GetRun",
        "UpdateRun",
        "LogBatch",
        "SetTag",
        "GetMetricHistory",
        "LogModel",
        "LogOutputs",
        "GetLoggedModel",
        "FinalizeLoggedModel",
        "SetLoggedModelTags",
        "CreateRegisteredModel",
        "CreateModelVersion",
        "GetModelVersion",
        "SearchModelVersions",
        "SetExperimentTag",
    )
}


def _mlflow_grants(document):
    """Return {Sid: statement} of the statements that grant anything for MLflow: sagemaker-mlflow or
    secretsmanager actions, or the artifact store's statements (every other S3 grant is on the ML bucket)."""
    return {
        s.get("Sid", ""): s
        for s in document["Statement"]
        if s.get("Sid", "").startswith("Mlflow")
        or any(a.split(":")[0] in ("sagemaker-mlflow", "secretsmanager") for a in _list(s["Action"]))
    }


NOTIFY_EMAIL = "ml-team@example.com"
NOTIFY_VARS = ("-var", "notifications=true", "-var", f"notification_email={NOTIFY_EMAIL}")
NOTIFICATION_RESOURCES = {
    "aws_kms_key.notifications",
    "aws_kms_alias.notifications",
    "aws_sns_topic.training_jobs",
    "aws_sns_topic_policy.training_jobs",
    "aws_cloudwatch_event_rule.training_job_ended",
    "aws_cloudwatch_event_target.training_job_ended",
    "aws_sns_topic_subscription.training_jobs_email",
}
RULE_ARN = f"arn:aws:events:us-east-1:123456789012:rule/{PREFIX}-training-job-ended"


def _assert_notifications(topic_arn):
    """The rule sends the project's finished jobs to the topic (encrypted with a key EventBridge may use),
    which mails NOTIFY_EMAIL."""
    import boto3

    events, sns, kms = boto3.client("events"), boto3.client("sns"), boto3.client("kms")
    assert topic_arn.endswith(f":{PREFIX}-training-jobs")
    rule = events.describe_rule(Name=f"{PREFIX}-training-job-ended")
    assert rule["Arn"] == RULE_ARN and rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {"TrainingJobName": [{"prefix": "model-lib-"}], "TrainingJobStatus": ["Completed", "Failed", "Stopped"]},
    }
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == topic_arn
    # What the rule lets through, and the line a subscriber reads, as (moto's) EventBridge delivers it.
    messages = _delivered(rule["EventPattern"], target["InputTransformer"])
    assert messages == [
        "SageMaker training job model-lib-20261202-101010 ended: Completed (Completed). Details: aws sagemaker "
        "describe-training-job --region us-east-1 --training-job-name model-lib-20261202-101010",
        "SageMaker training job model-lib-train-0a1b2c3d-2 ended: Stopped (MaxWaitTimeExceeded). Details: aws sagemaker "
        "describe-training-job --region us-east-1 --training-job-name model-lib-train-0a1b2c3d-2",
    ]

    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    key = kms.describe_key(KeyId=f"alias/{PREFIX}-notifications")["KeyMetadata"]
    assert attributes["KmsMasterKeyId"] == key["Arn"] and kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    key_grant = next(
        s
        for s in json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])["Statement"]
        if s["Principal"] == {"Service": "events.amazonaws.com"}
    )
    assert sorted(_list(key_grant["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert key_grant["Condition"] == {"ArnEquals": {"aws:SourceArn": RULE_ARN}}
    (publish,) = json.loads(attributes["Policy"])["Statement"]
    assert publish["Principal"] == {"Service": "events.amazonaws.com"} and _list(publish["Action"]) == ["sns:Publish"]
    assert _list(publish["Resource"]) == [topic_arn] and publish["Condition"] == {"ArnEquals": {"aws:SourceArn": RULE_ARN}}
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", NOTIFY_EMAIL)]


def _delivered(pattern, transformer):
    """Return the messages a scratch rule with ``pattern`` and ``transformer`` delivers to a queue for four
    SageMaker state changes: two of the project's jobs ending, one still running and another's job failing.
    The rule is on a bus of its own: moto cannot deliver to the real rule's SNS target."""
    import boto3

    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"{PREFIX}-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    scratch = {"Rule": f"{PREFIX}-scratch", "EventBusName": f"{PREFIX}-scratch"}
    events.create_event_bus(Name=scratch["EventBusName"])
    events.put_rule(Name=scratch["Rule"], EventBusName=scratch["EventBusName"], EventPattern=pattern)
    try:
        events.put_targets(**scratch, Targets=[{"Id": "queue", "Arn": queue_arn, "InputTransformer": transformer}])
        changes = [
            ("model-lib-20261202-101010", "Completed", "Completed"),
            ("model-lib-20261202-111111", "InProgress", "Training"),
            ("someone-elses-job", "Failed", "Failed"),
            ("model-lib-train-0a1b2c3d-2", "Stopped", "MaxWaitTimeExceeded"),
        ]
        entries = [
            {
                "Source": "aws.sagemaker",
                "DetailType": "SageMaker Training Job State Change",
                "Detail": json.dumps({"TrainingJobName": job, "TrainingJobStatus": status, "SecondaryStatus": secondary}),
                "EventBusName": scratch["EventBusName"],
            }
            for job, status, secondary in changes
        ]
        assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in received]
    finally:
        events.remove_targets(**scratch, Ids=["queue"])
        events.delete_rule(Name=scratch["Rule"], EventBusName=scratch["EventBusName"])
        events.delete_event_bus(Name=scratch["EventBusName"])
        sqs.delete_queue(QueueUrl=queue)
