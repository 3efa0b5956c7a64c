"""The rules `model-lib launch` applies before anything is sent: which image, which tracking URIs."""

import pytest

from model_lib.errors import SageMakerEnvironmentError
from model_lib.sagemaker.launch import image_kind, tracking_uri_problem
from model_lib.tracking import check_tracking_uri, public_uri


@pytest.mark.parametrize(
    "instance_type,kind",
    [
        ("ml.g5.xlarge", "gpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.p4d.24xlarge", "gpu"),
        ("ml.m5.xlarge", "cpu"),
        ("ml.c5.2xlarge", "cpu"),
    ],
)
def test_gpu_instance_families_get_the_gpu_image(instance_type, kind):
    assert image_kind(instance_type) == kind


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "https://[::1]:5000",
        "sqlite:///mlflow.db",
        "file:///tmp/mlruns",
        "./mlruns",
    ],
)
def test_a_tracking_uri_on_this_machine_is_refused_for_a_cloud_job(uri):
    assert "is on this machine: a SageMaker job cannot reach it" in tracking_uri_problem(uri)
    assert tracking_uri_problem(uri, allow_local=True) is None  # SageMaker local mode


@pytest.mark.parametrize(
    "uri", ["https://mlflow.example.com", "http://10.0.0.5:5000", "arn:aws:sagemaker:eu-west-1:1:mlflow-tracking-server/t", None]
)
def test_reachable_or_absent_tracking_uris_pass(uri):
    assert tracking_uri_problem(uri) is None


def test_credentials_in_a_uri_never_reach_messages():
    assert public_uri("https://alice:s3cret@mlflow.example.com:8443/x") == "https://***@mlflow.example.com:8443/x"
    problem = tracking_uri_problem("http://alice:s3cret@127.0.0.1:5000")
    assert "***@127.0.0.1:5000" in problem and "s3cret" not in problem


def test_a_tracking_uri_mlflow_cannot_use_fails_fast():
    from model_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        check_tracking_uri("ftp://mlflow.example.com")
    check_tracking_uri("sqlite:///mlflow.db")
    check_tracking_uri("postgresql+psycopg2://db/mlflow")


def test_a_repo_with_no_s3_remote_is_told_how_to_add_one():
    from model_lib.sagemaker.launch import dvc_s3_remote
    from tests.conftest import REPO

    with pytest.raises(SageMakerEnvironmentError, match=r"no S3 DVC remote \(remotes: local\): add one with `dvc remote add s3"):
        dvc_s3_remote(None, REPO)  # this repository's own config: the local remote only


def test_a_spot_job_waits_twice_its_run_unless_told():
    from model_lib.sagemaker.launch import LaunchOptions

    assert LaunchOptions(max_run=3600).spot_max_wait == 7200
    assert LaunchOptions(max_run=3600, max_wait=5000).spot_max_wait == 5000


def test_s3_uris_split_into_bucket_and_key_and_others_are_refused():
    from model_lib.sagemaker.jobs import split_s3_uri

    assert split_s3_uri("s3://bucket/dvc/files/md5/ab/cdef") == ("bucket", "dvc/files/md5/ab/cdef")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(SageMakerEnvironmentError, match="'/tmp/model.tar.gz': expected s3://bucket/key"):
        split_s3_uri("/tmp/model.tar.gz")


@pytest.mark.parametrize(
    "given,message",
    [
        ({"instance_type": "m5.xlarge"}, "--instance-type 'm5.xlarge': expected ml.<family>.<size>"),
        ({"instance_type": "ml.m5"}, "--instance-type 'ml.m5': expected ml.<family>.<size>"),
        ({"instance_type": "ml.m5.xlarge\n"}, "--instance-type 'ml.m5.xlarge\\n': expected ml.<family>.<size>"),
        ({"instance_type": ""}, "--instance-type '': expected ml.<family>.<size>"),
        ({"instance_type": "local_gpu"}, "SageMaker local mode is `model-lib sagemaker-local`"),
        ({"instance_count": 0}, "--instance-count 0: expected 1..20"),
        ({"instance_count": 21}, "--instance-count 21: expected 1..20"),
        ({"max_run": 0}, "--max-run 0: expected 1..2419200"),
        ({"max_run": 10**8}, "--max-run 100000000: expected 1..2419200"),
        ({"max_wait": -1}, "--max-wait -1: expected 1..2419200"),
        ({"spot": True, "max_run": 3600, "max_wait": 60}, "--max-wait 60 is below --max-run 3600"),
        ({"keep_alive": 0}, "--keep-alive 0: expected 1..3600"),
        ({"keep_alive": 3601}, "--keep-alive 3601: expected 1..3600"),
        ({"keep_alive": 600, "spot": True}, "--keep-alive 600: SageMaker keeps no warm pool for managed spot jobs (--spot)"),
        ({"spot_fallback": True}, "--spot-fallback: falls back from spot to on demand; it needs --spot"),
        ({"spot": True, "spot_fallback": True, "spot_fallback_after": 0}, "--spot-fallback-after 0: expected 1..2419200"),
        ({"job_name": "my_job"}, "--job-name 'my_job': expected 1-63 letters, digits and '-'"),
        ({"job_name": "x" * 64}, "expected 1-63 letters"),
        ({"role_arn": "SageMakerRole"}, "--role-arn 'SageMakerRole': expected arn:aws:iam::<account>:role/<name>"),
        ({"bucket": "My_Bucket"}, "--bucket 'My_Bucket': expected an S3 bucket name"),
        ({"mlflow_secret": "my secret"}, "--mlflow-secret 'my secret': expected a Secrets Manager secret name or ARN"),
        ({"image_uri": "model-lib training:cpu"}, "--image-uri 'model-lib training:cpu': expected <registry>/<repository>:<tag>"),
    ],
)
def test_a_launch_option_sagemaker_cannot_take_is_named_with_what_was_expected(given, message):
    from model_lib.sagemaker.options import LaunchOptions

    problems = LaunchOptions(**given).problems()
    assert len(problems) == 1 and message in problems[0], problems


def test_launch_options_of_the_forms_sagemaker_takes_pass():
    from model_lib.sagemaker.options import LaunchOptions

    good = LaunchOptions(
        instance_type="ml.p4d.24xlarge",
        instance_count=20,
        max_run=2419200,
        job_name="model-lib-train-abc123-2",
        role_arn="arn:aws:iam::123456789012:role/service-role/sm-exec",
        bucket="model-lib.artifacts-1",
        mlflow_secret="arn:aws:secretsmanager:us-east-1:123456789012:secret:mlflow/team-AbC123",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/model-lib-training:gpu-abc1234",
        keep_alive=3600,
    )
    spot = LaunchOptions(spot=True, spot_fallback=True, spot_fallback_after=1)
    assert LaunchOptions().problems() == [] and good.problems() == [] and spot.problems() == []


@pytest.mark.parametrize(
    "environ,where,secret",
    [
        ({"MLFLOW_TRACKING_URI": "https://alice:s3cret-pw@mlflow.example.com"}, "MLFLOW_TRACKING_URI='https://***@", "s3cret-pw"),
        (
            {"MLFLOW_TRACKING_URI": "https://ghp_t0kenvalue@mlflow.example.com"},
            "MLFLOW_TRACKING_URI='https://***@",
            "ghp_t0kenvalue",
        ),
        ({"MLFLOW_TRACKING_URI": "https://mlflow.example.com/?access_token=t0kenvalue"}, "query (access_token=)", "t0kenvalue"),
        ({"MODEL_LIB_MLFLOW_TAGS": '{"api_key": "k3yvalue"}'}, "MODEL_LIB_MLFLOW_TAGS: api_key: a tag named like", "k3yvalue"),
        (
            {"MODEL_LIB_MLFLOW_TAGS": '{"who": "AKIAABCDEFGHIJKLMNOP"}'},
            "MODEL_LIB_MLFLOW_TAGS: who: holds an AWS access key id",
            "AKIA",
        ),
        (
            {"MLFLOW_EXPERIMENT_NAME": "exp-wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"},
            "holds the value of AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI",
        ),
        (
            {"MODEL_LIB_MLFLOW_TAGS": '["not", "an object"]'},
            'MODEL_LIB_MLFLOW_TAGS=\'["not", "an object"]\': expected a JSON object',
            None,
        ),
    ],
)
def test_a_credential_in_what_launch_forwards_is_refused_and_not_shown(environ, where, secret):
    from model_lib.config import TrainConfig
    from model_lib.sagemaker.launch import forwarded_secret_problems
    from model_lib.sagemaker.options import LaunchOptions

    problems = forwarded_secret_problems(TrainConfig(), LaunchOptions(), environ)
    assert len(problems) == 1 and where in problems[0], problems
    assert secret is None or secret not in problems[0]
    assert secret is None or "--mlflow-secret NAME or MODEL_LIB_MLFLOW_SECRET" in problems[0]


def test_what_launch_forwards_without_credentials_passes():
    from model_lib.config import TrainConfig
    from model_lib.sagemaker.launch import forwarded_secret_problems
    from model_lib.sagemaker.options import LaunchOptions

    environ = {
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com:8443/base",
        "MODEL_LIB_MLFLOW_TAGS": '{"team": "nlp", "tokenizer": "glove", "repo": "ssh-less https://git.example.com/r"}',
        "MODEL_LIB_MLFLOW_SECRET": "mlflow/team",
        "MLFLOW_TRACKING_PASSWORD": "never-forwarded-itself",
    }
    assert forwarded_secret_problems(TrainConfig(), LaunchOptions(), environ) == []


def test_the_remote_train_stage_refuses_a_bad_option_and_a_credential_before_pushing_anything(tmp_path):
    """`model-lib train` on SageMaker (MODEL_LIB_TRAIN_ON=sagemaker): the launch checks run before the stage's
    `dvc push` (this folder is no DVC repository: a push would fail otherwise), with nothing on stdout."""
    import os
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    env = {
        **os.environ,
        "MODEL_LIB_TRAIN_ON": "sagemaker",
        "MODEL_LIB_LAUNCH_OPTIONS": "--instance-type local --max-run 0 --keep-alive 3601 --spot-fallback",
        "MLFLOW_TRACKING_URI": "https://alice:s3cret-pw@mlflow.example.com",
    }
    command = [sys.executable, "-m", "model_lib.cli", "train"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    assert "5 problem(s)" in result.stderr and "--instance-type 'local': expected ml.<family>.<size>" in result.stderr
    assert "--max-run 0: expected 1..2419200" in result.stderr and "--keep-alive 3601: expected 1..3600" in result.stderr
    assert "--spot-fallback: falls back from spot to on demand; it needs --spot" in result.stderr
    assert "MLFLOW_TRACKING_URI='https://***@mlflow.example.com': holds credentials" in result.stderr
    assert "s3cret-pw" not in result.stderr and "Traceback" not in result.stderr
