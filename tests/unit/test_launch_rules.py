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
