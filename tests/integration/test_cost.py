"""What `model-lib launch --wait` reports a finished job cost, against moto and the fake SageMaker:
moto (5.2) has no pricing service, so the Price List API answers nothing and the shipped table is used."""

from __future__ import annotations

import json
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


def test_a_finished_spot_job_on_two_instances_reports_its_cost_and_saving_from_the_table(
    fake_sagemaker: FakeSageMaker, aws_env: str
) -> None:
    from model_lib.cli import outcome_lines
    from model_lib.sagemaker.launch import wait

    session = boto3.Session(**CREDENTIALS)
    role = session.client("iam").create_role(RoleName=f"sm-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(TRUST))
    name = f"cost-{uuid.uuid4().hex[:10]}"
    session.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:cpu-abc",
            "TrainingInputMode": "File",
        },
        RoleArn=role["Role"]["Arn"],
        OutputDataConfig={"S3OutputPath": "s3://nowhere/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        EnableManagedSpotTraining=True,
    )
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
