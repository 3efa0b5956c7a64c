"""What `model-lib launch --wait` reports a finished job cost, against moto and the fake SageMaker:
moto (5.2) has no pricing service, so the Price List API answers nothing and the shipped table is used."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import boto3
import pytest

from tests.standins.fake_sagemaker import FakeSageMaker

pytestmark = pytest.mark.integration

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def _create_job(session: boto3.Session, output: str, count: int, spot: bool) -> str:
    iam = session.client("iam")
    role = iam.create_role(RoleName=f"sm-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(TRUST))
    name = f"cost-{uuid.uuid4().hex[:10]}"
    session.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:cpu-abc",
            "TrainingInputMode": "File",
        },
        RoleArn=role["Role"]["Arn"],
        OutputDataConfig={"S3OutputPath": output},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": count, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        EnableManagedSpotTraining=spot,
    )
    return name


def test_the_cost_of_a_finished_job_is_added_to_its_mlflow_run(
    fake_sagemaker: FakeSageMaker, aws_env: str, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's model archive names its run (metrics.json's run_id): `launch --wait` logs the cost there."""
    import mlflow

    from model_lib.sagemaker.launch import wait

    session = boto3.Session(**CREDENTIALS)
    bucket = f"cost-{uuid.uuid4().hex[:12]}"
    session.client("s3").create_bucket(Bucket=bucket)
    name = _create_job(session, f"s3://{bucket}/jobs", count=1, spot=False)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run_id = client.create_run(client.create_experiment(f"cost-{uuid.uuid4().hex[:8]}")).info.run_id
    client.set_terminated(run_id)  # as the job leaves it
    summary = json.dumps({"run_id": run_id, "test": {"accuracy": 0.75}}).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(summary)
        tar.addfile(info, io.BytesIO(summary))
    session.client("s3").put_object(Bucket=bucket, Key=f"jobs/{name}/output/model.tar.gz", Body=archive.getvalue())
    fake_sagemaker.end(name, "Completed", seconds=1800)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    outcome = wait(name, session, poll_seconds=0.1, report=lambda _: None)
    assert outcome.test_accuracy == 0.75
    run = client.get_run(run_id)
    assert run.data.metrics == {"cost_usd": 0.115, "spot_saving_usd": 0.0} and run.info.status == "FINISHED"


def test_a_finished_spot_job_on_two_instances_reports_its_cost_and_saving_from_the_table(
    fake_sagemaker: FakeSageMaker, aws_env: str
) -> None:
    from model_lib.cli import outcome_lines
    from model_lib.sagemaker.launch import wait

    session = boto3.Session(**CREDENTIALS)
    name = _create_job(session, "s3://nowhere/jobs", count=2, spot=True)
    fake_sagemaker.end(name, "Stopped", seconds=3600, billable_seconds=1200)

    outcome = wait(name, session, poll_seconds=0.1, report=lambda _: None)
    assert outcome.cost is not None
    assert outcome.cost.metrics() == {
        "cost_usd": round(1200 / 3600 * 0.23 * 2, 4),
        "spot_saving_usd": round(2400 / 3600 * 0.23 * 2, 4),
    }
    assert outcome.cost.price.source.startswith("table as of") and "check the Price List API" in outcome.cost.describe()
    printed = outcome_lines(name, outcome)  # what `model-lib launch --wait` prints at the job's end
    assert "  seconds: 1200 billable of 3600 training (67% saved)" in printed
    cost = next(line for line in printed if line.startswith("  cost:"))
    assert cost.startswith("  cost:    $0.1533 (spot saved $0.3067; 2 x ml.m5.xlarge at $0.23/h, us-east-1, table as of")
