"""The fake SageMaker (tests/standins/fake_sagemaker.py) on the session's moto server, driven by boto3:
training-job status follows the end set by whatever runs the job, not moto's instant Completed."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.standins.fake_sagemaker import FakeSageMaker, status_for_exit

pytestmark = pytest.mark.integration

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:cpu-abc"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
METRICS = [{"Name": "validation:accuracy", "Regex": "val_accuracy: ([0-9.]+)"}]


@pytest.fixture(scope="module")
def world(moto_server: str) -> dict[str, Any]:
    """A bucket and a role in moto, and its sagemaker and s3 clients."""
    s3 = boto3.client("s3", endpoint_url=moto_server, **CREDENTIALS)
    iam = boto3.client("iam", endpoint_url=moto_server, **CREDENTIALS)
    bucket = f"status-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    statement = {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    role = iam.create_role(RoleName=f"sm-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_server, **CREDENTIALS)
    return {"s3": s3, "bucket": bucket, "role": role, "sagemaker": sagemaker}


def create_job(world: dict[str, Any], prefix: str = "job") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    world["sagemaker"].create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": METRICS},
        RoleArn=world["role"],
        OutputDataConfig={"S3OutputPath": f"s3://{world['bucket']}/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def statuses(transitions: list[dict[str, Any]]) -> list[str]:
    return [t["Status"] for t in transitions]


def test_describe_and_list_follow_the_end(fake_sagemaker: FakeSageMaker, world: dict[str, Any]) -> None:
    client = world["sagemaker"]
    name = create_job(world)

    job = client.describe_training_job(TrainingJobName=name)
    assert job["TrainingJobStatus"] == "InProgress"
    assert job["SecondaryStatus"] in ("Starting", "Downloading")  # Starting for the first second
    for absent in ("TrainingEndTime", "ModelArtifacts", "FailureReason", "TrainingTimeInSeconds", "FinalMetricDataList"):
        assert absent not in job
    assert (
        statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading"][: 1 + (job["SecondaryStatus"] != "Starting")]
    )
    assert "EndTime" not in job["SecondaryStatusTransitions"][-1]
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == METRICS  # not moto's own

    time.sleep(max(0.0, job["CreationTime"].timestamp() + 2.1 - time.time()))
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("InProgress", "Training")
    transitions = job["SecondaryStatusTransitions"]
    assert statuses(transitions) == ["Starting", "Downloading", "Training"]
    assert all("EndTime" in t for t in transitions[:-1]) and "EndTime" not in transitions[-1]
    assert job["TrainingStartTime"] >= job["CreationTime"]

    fake_sagemaker.end(name, "Completed", seconds=12.7)
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed")
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{world['bucket']}/jobs/{name}/output/model.tar.gz"
    assert job["TrainingTimeInSeconds"] == job["BillableTimeInSeconds"] == 12
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"]
    assert "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])

    failed = create_job(world, "failed")
    fake_sagemaker.end(failed, "Failed", failure="ValueError: boom")
    job = client.describe_training_job(TrainingJobName=failed)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"] == "ValueError: boom"
    assert "ModelArtifacts" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-1] == "Failed"

    long_failure = create_job(world, "long")
    fake_sagemaker.end(long_failure, "Failed", failure="x" * 5000)
    assert len(client.describe_training_job(TrainingJobName=long_failure)["FailureReason"]) == 1024

    running = create_job(world, "running")
    listed = {s["TrainingJobName"]: s for s in client.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]}
    assert listed[name]["TrainingJobStatus"] == "Completed"
    assert listed[failed]["TrainingJobStatus"] == "Failed"
    assert listed[running]["TrainingJobStatus"] == "InProgress"
    assert "TrainingEndTime" not in listed[running] and "TrainingEndTime" in listed[failed]
    in_progress = client.list_training_jobs(StatusEquals="InProgress", MaxResults=100)["TrainingJobSummaries"]
    assert running in {s["TrainingJobName"] for s in in_progress}
    assert {s["TrainingJobStatus"] for s in in_progress} == {"InProgress"}

    with pytest.raises(ClientError) as raised:  # moto's errors are as they were
        client.describe_training_job(TrainingJobName="no-such-job")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_stop_is_recorded(fake_sagemaker: FakeSageMaker, world: dict[str, Any]) -> None:
    client = world["sagemaker"]
    name = create_job(world, "stop")
    assert name not in fake_sagemaker.stop_requests

    client.stop_training_job(TrainingJobName=name)
    assert fake_sagemaker.stop_requests.count(name) == 1
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopping", "Stopping")

    fake_sagemaker.end(name, status_for_exit(143))
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "ModelArtifacts" not in job and "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-2:] == ["Stopping", "Stopped"]

    for ended in (name, "no-such-job"):  # as SageMaker: an ended or unknown job cannot be stopped
        with pytest.raises(ClientError) as raised:
            client.stop_training_job(TrainingJobName=ended)
        assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert fake_sagemaker.stop_requests.count(name) == 1


def test_an_end_that_is_not_one_is_refused_and_exit_codes_map_to_sagemaker_statuses(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    name = create_job(world, "bad-end")
    with pytest.raises(ValueError, match="status: expected one of"):
        fake_sagemaker.end(name, "Done")
    assert world["sagemaker"].describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    assert [status_for_exit(code) for code in (0, 143, 1, 137)] == ["Completed", "Stopped", "Failed", "Failed"]
