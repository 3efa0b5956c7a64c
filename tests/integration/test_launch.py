"""`model-lib launch` against a real moto server: the CreateTrainingJob request a user's job gets."""

import json

import pytest

from model_lib.config import TrainConfig
from model_lib.errors import SageMakerEnvironmentError
from model_lib.sagemaker.launch import launch
from tests.conftest import REPO

pytestmark = pytest.mark.integration

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/model-lib-training:cpu"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@pytest.fixture
def aws(aws_env, tmp_path, monkeypatch, tiny_prepared):
    """A bucket holding the four channel objects under DVC-style keys, and an execution role."""
    import boto3

    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    session = boto3.Session()
    bucket = f"model-lib-{tmp_path.name.lower().replace('_', '-')[-20:]}"
    session.client("s3").create_bucket(Bucket=bucket)
    uris = {}
    for i, (name, path) in enumerate(sorted(tiny_prepared.items())):
        key = f"dvc/files/md5/{i:02d}/{name}0123456789abcdef"
        session.client("s3").upload_file(str(path), bucket, key)
        uris[name] = f"s3://{bucket}/{key}"
    role = session.client("iam").create_role(RoleName=f"sm-{bucket}", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    return session, bucket, uris, role


def test_launch_sends_encoded_hyperparameters_channels_and_only_the_tracking_settings(aws, monkeypatch):
    session, bucket, uris, role = aws
    requests = []
    # moto does not store a job's Environment: read the API parameters as boto3 sends them.
    session.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: requests.append(dict(params))
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "do-not-forward")  # set in the launching shell, never sent
    name = launch(
        TrainConfig(epochs=2, glove_init=False),
        image_uri=IMAGE,
        role_arn=role,
        bucket=bucket,
        uris=uris,
        boto_session=session,
        job_name="model-lib-test-1",
        source_dir=REPO / "entry_point",
    )
    assert name == "model-lib-test-1"
    request = requests[0]
    hps = request["HyperParameters"]
    assert hps["epochs"] == "2" and hps["glove_init"] == "false" and hps["model"] == '"ngram_glove"'
    assert hps["sagemaker_program"] == '"train.py"' and hps["sagemaker_submit_directory"].startswith(f'"s3://{bucket}/code/')
    assert "learning_rate" not in hps  # null: the job applies the model's default
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == uris
    assert request["Environment"] == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{bucket}/checkpoints/model-lib-test-1",
        "LocalPath": "/opt/ml/checkpoints",
    }
    described = session.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert described["RoleArn"] == role


def test_launch_refuses_a_channel_that_was_not_pushed(aws):
    session, bucket, uris, role = aws
    uris = {**uris, "vocab": f"s3://{bucket}/dvc/files/md5/ff/missing"}
    with pytest.raises(SageMakerEnvironmentError, match=r"channel 'vocab': s3://.*/missing not found .*run `dvc push` first"):
        launch(
            TrainConfig(),
            image_uri=IMAGE,
            role_arn=role,
            bucket=bucket,
            uris=uris,
            boto_session=session,
            source_dir=REPO / "entry_point",
        )
