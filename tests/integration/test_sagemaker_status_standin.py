"""The SageMaker status stand-in (tests/standins/sagemaker_status.py) in front of a real moto server, driven by
boto3: training-job status follows the end the local worker reports to it, not moto's instant Completed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.standins.sagemaker_status import report_end, start_status_proxy, status_for_exit, stop_requests, stop_status_proxy

pytestmark = pytest.mark.integration

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:cpu-abc"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}
METRICS = [{"Name": "validation:accuracy", "Regex": "val_accuracy: ([0-9.]+)"}]


@pytest.fixture(scope="module")
def proxy(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The proxy in front of the session's moto server; yields its URL and its stop-requests file."""
    stops = tmp_path_factory.mktemp("sagemaker-status") / "stops.txt"
    process, url = start_status_proxy(moto_server, stop_requests_file=stops)
    try:
        yield url, stops
    finally:
        assert stop_status_proxy(process) == 0  # SIGTERM ends it cleanly


@pytest.fixture(scope="module")
def world(moto_server: str) -> dict[str, Any]:
    """A bucket and a role in moto, and clients: sagemaker through moto directly, s3."""
    s3 = boto3.client("s3", endpoint_url=moto_server, **CREDENTIALS)
    iam = boto3.client("iam", endpoint_url=moto_server, **CREDENTIALS)
    bucket = f"status-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    statement = {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    role = iam.create_role(RoleName=f"sm-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    moto_sagemaker = boto3.client("sagemaker", endpoint_url=moto_server, **CREDENTIALS)
    return {"s3": s3, "bucket": bucket, "role": role, "moto_sagemaker": moto_sagemaker}


def sagemaker(url: str) -> Any:
    return boto3.client("sagemaker", endpoint_url=url, **CREDENTIALS)


def create_job(client: Any, world: dict[str, Any], prefix: str = "job", output: str = "jobs") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    client.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": METRICS},
        RoleArn=world["role"],
        OutputDataConfig={"S3OutputPath": f"s3://{world['bucket']}/{output}"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def finish(url: str, world: dict[str, Any], name: str, status: str, failure: str | None = None, seconds: float = 12.7) -> None:
    """What the local worker does at a job's end: model.tar.gz uploaded when Completed, the end reported to the proxy."""
    if status == "Completed":
        world["s3"].put_object(Bucket=world["bucket"], Key=f"jobs/{name}/output/model.tar.gz", Body=b"not really a tarball")
    exit_code = {"Completed": 0, "Stopped": 143}.get(status, 1)
    report_end(url, name, status, exit_code=exit_code, seconds=seconds, failure=failure)


def statuses(transitions: list[dict[str, Any]]) -> list[str]:
    return [t["Status"] for t in transitions]


def test_describe_follows_the_reported_end(proxy: tuple[str, Path], world: dict[str, Any]) -> None:
    client = sagemaker(proxy[0])
    name = create_job(client, world)

    job = client.describe_training_job(TrainingJobName=name)
    assert job["TrainingJobStatus"] == "InProgress"
    assert job["SecondaryStatus"] in ("Starting", "Downloading")  # Starting for the first second
    for absent in ("TrainingEndTime", "ModelArtifacts", "FailureReason", "TrainingTimeInSeconds", "FinalMetricDataList"):
        assert absent not in job
    assert (
        statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading"][: 1 + (job["SecondaryStatus"] != "Starting")]
    )
    assert "EndTime" not in job["SecondaryStatusTransitions"][-1]
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == METRICS  # moto's own replaced by what was given
    assert world["moto_sagemaker"].describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Completed"

    time.sleep(max(0.0, job["CreationTime"].timestamp() + 2.1 - time.time()))
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("InProgress", "Training")
    transitions = job["SecondaryStatusTransitions"]
    assert statuses(transitions) == ["Starting", "Downloading", "Training"]
    assert all("EndTime" in t for t in transitions[:-1]) and "EndTime" not in transitions[-1]
    assert job["TrainingStartTime"] >= job["CreationTime"]

    finish(proxy[0], world, name, "Completed", seconds=12.7)
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed")
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{world['bucket']}/jobs/{name}/output/model.tar.gz"
    assert job["TrainingTimeInSeconds"] == job["BillableTimeInSeconds"] == 12
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"]
    assert "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])

    failed = create_job(client, world, "failed")
    finish(proxy[0], world, failed, "Failed", failure="ValueError: boom")
    job = client.describe_training_job(TrainingJobName=failed)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"] == "ValueError: boom"
    assert "ModelArtifacts" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-1] == "Failed"

    long_failure = create_job(client, world, "long")
    finish(proxy[0], world, long_failure, "Failed", failure="x" * 5000)
    assert len(client.describe_training_job(TrainingJobName=long_failure)["FailureReason"]) == 1024

    running = create_job(client, world, "running")
    listed = {s["TrainingJobName"]: s for s in client.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]}
    assert listed[name]["TrainingJobStatus"] == "Completed"
    assert listed[failed]["TrainingJobStatus"] == "Failed"
    assert listed[running]["TrainingJobStatus"] == "InProgress"
    assert "TrainingEndTime" not in listed[running] and "TrainingEndTime" in listed[failed]
    in_progress = client.list_training_jobs(StatusEquals="InProgress", MaxResults=100)["TrainingJobSummaries"]
    assert running in {s["TrainingJobName"] for s in in_progress}
    assert {s["TrainingJobStatus"] for s in in_progress} == {"InProgress"}

    with pytest.raises(ClientError) as raised:  # moto's errors are relayed as they are
        client.describe_training_job(TrainingJobName="no-such-job")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_stop_is_recorded(proxy: tuple[str, Path], world: dict[str, Any]) -> None:
    url, stops = proxy
    client = sagemaker(url)
    name = create_job(client, world, "stop")
    assert name not in stop_requests(stops)

    client.stop_training_job(TrainingJobName=name)
    assert stop_requests(stops).count(name) == 1
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopping", "Stopping")

    finish(url, world, name, "Stopped")
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "ModelArtifacts" not in job and "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-2:] == ["Stopping", "Stopped"]

    for ended in (name, "no-such-job"):  # as SageMaker: an ended or unknown job cannot be stopped
        with pytest.raises(ClientError) as raised:
            client.stop_training_job(TrainingJobName=ended)
        assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert stop_requests(stops).count(name) == 1


def test_service_endpoint_variable_routes_sagemaker_to_the_proxy(
    proxy: tuple[str, Path], world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = proxy
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    session = boto3.Session()
    client, s3 = session.client("sagemaker"), session.client("s3")
    assert client.meta.endpoint_url == url
    assert s3.meta.endpoint_url == moto_server

    name = create_job(client, world, "env")
    assert client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"  # moto says Completed
    finish(url, {**world, "s3": s3}, name, "Completed")
    assert client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Completed"


def test_an_end_that_is_not_one_is_refused_and_exit_codes_map_to_sagemaker_statuses(
    proxy: tuple[str, Path], world: dict[str, Any]
) -> None:
    import urllib.error

    client = sagemaker(proxy[0])
    name = create_job(client, world, "bad-end")
    with pytest.raises(urllib.error.HTTPError) as refused:
        report_end(proxy[0], name, "Done")
    assert refused.value.code == 400
    assert client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    assert [status_for_exit(code) for code in (0, 143, 1, 137)] == ["Completed", "Stopped", "Failed", "Failed"]
