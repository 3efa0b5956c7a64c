"""Authenticated MLflow for cloud jobs, through the real toolkit and a real `mlflow server`.

- A self-hosted server behind basic auth (MLflow's own basic-auth app): the job gets only the *name*
  of an AWS Secrets Manager secret (moto), reads the credentials with its own AWS credentials, and logs.
- SageMaker managed MLflow: the tracking URI is the server's ARN; the `sagemaker-mlflow` plugin
  signs every request with SigV4 (verified by the stand-in tests/standins/auth_proxy.py, which
  refuses as AWS does) and artefacts go straight to S3.
- Refused credentials (HTTP 401 or 403) stop the job before it trains, with a message that says so.
- Credentials in a run's settings (MLFLOW_TRACKING_URI's user:password, MLFLOW_TRACKING_PASSWORD) are in
  nothing it prints or writes, MLflow's own lines and the exception texts our warnings quote included.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from model_lib.tracking import SECRET_ENV
from tests.conftest import (
    BIN,
    MLFLOW_ADMIN,
    REPO,
    TINY_TRAINING,
    free_port,
    logged_model,
    start_mlflow_server,
    stop_server,
    write_prepared,
)
from tests.standins.auth_proxy import Policy, SigV4, auth_proxy

pytestmark = pytest.mark.integration

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/model-lib"
HPS = {"epochs": "2", "batch_size": "16", "learning_rate": "0.01", "ngram_buckets": "4099"}
PASSWORD = "correct-horse-battery"
STALE = "last-years-password"
GREPPED = "pw-Grep4Me-7c1d"  # held by nothing else: a file or a line that holds it got it from the run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("auth") / "prepared", count=400, max_length=40)


def toolkit_job(
    tmp_path: Path, prepared: dict[str, Path], env: dict[str, str], name: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Lay out a job and run it through the real sagemaker-training toolkit; return its base and result."""
    from model_lib.sagemaker.basedir import lay_out

    base = tmp_path / name
    lay_out(base, HPS, prepared, REPO / "entry_point")
    script = (
        "import pathlib, sys\nfrom model_lib.sagemaker.supervise import run_toolkit\n"
        f"sys.exit(run_toolkit(pathlib.Path({str(base)!r}), {env!r}, timeout=600))\n"
    )
    result = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=900)
    return base, result


def trained_nothing(base: Path) -> bool:
    from model_lib import checkpoints

    return checkpoints.generation_numbers(base / "checkpoints") == [] and not (base / "model" / "model.keras").exists()


def as_admin(server: str, api: str, body: dict[str, str]) -> None:
    """POST ``body`` to the basic-auth server's ``api`` as its admin (make a user, an experiment)."""
    import requests

    requests.post(f"{server}/api/2.0/mlflow/{api}", json=body, auth=MLFLOW_ADMIN, timeout=30).raise_for_status()


def the_run(uri: str, experiment: str, evaluated: bool = True):
    """The experiment's one run, read straight from the server (not through a proxy)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment} was never created"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1]
    assert ("test_accuracy" in run.data.metrics) == evaluated and "git_commit" in run.data.tags
    return client, run


def test_self_hosted_server_behind_basic_auth_with_the_password_in_secrets_manager(
    aws_env, mlflow_auth_server, prepared, tmp_path, monkeypatch
):
    import boto3

    as_admin(mlflow_auth_server, "users/create", {"username": "trainer", "password": PASSWORD})
    secrets = boto3.client("secretsmanager")
    name = f"mlflow/{tmp_path.name}"
    secrets.create_secret(Name=name, SecretString=json.dumps({"username": "trainer", "password": PASSWORD}))
    experiment = f"basic-{tmp_path.name}"
    env = {"MLFLOW_TRACKING_URI": mlflow_auth_server, "MLFLOW_EXPERIMENT_NAME": experiment, SECRET_ENV: name}
    base, job = toolkit_job(tmp_path, prepared, env, "good")
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert PASSWORD not in output

    # The same job with a changed password in the secret: refused at start, nothing trained.
    secrets.put_secret_value(SecretId=name, SecretString=json.dumps({"username": "trainer", "password": STALE}))
    started = time.monotonic()
    base, job = toolkit_job(tmp_path, prepared, env, "stale")
    assert job.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "ConfigError: MLflow at http://127.0.0.1" in failure and "refused this process: HTTP 401" in failure
    assert STALE not in failure and STALE not in job.stdout + job.stderr
    assert trained_nothing(base)
    assert time.monotonic() - started < 120

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_ADMIN[1])
    client, run = the_run(mlflow_auth_server, experiment)
    logged_model(client, run.info.run_id)


def test_a_user_who_may_not_write_to_the_experiment_is_refused_before_training(mlflow_auth_server, tmp_path):
    """The server knows the user (HTTP 403, not 401): the tracker refuses to start, nothing sent."""
    as_admin(mlflow_auth_server, "users/create", {"username": "reader", "password": PASSWORD})
    experiment = f"not-yours-{tmp_path.name}"
    as_admin(mlflow_auth_server, "experiments/create", {"name": experiment})
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_auth_server,
        "MLFLOW_TRACKING_USERNAME": "reader",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }
    script = "from model_lib.tracking import MlflowTracker\nMlflowTracker(pending_file='pending.json')"
    result = subprocess.run(
        [str(BIN / "python"), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"ConfigError: MLflow at {mlflow_auth_server} refused this process: HTTP 403" in result.stderr, result.stderr[-3000:]
    assert PASSWORD not in result.stdout + result.stderr


def test_a_secret_that_cannot_be_used_names_the_secret_and_what_was_expected(aws_env):
    import boto3

    from model_lib.errors import ConfigError
    from model_lib.tracking import load_secret_credentials

    with pytest.raises(
        ConfigError, match=r"MODEL_LIB_MLFLOW_SECRET='absent': the secret could not be read \(ResourceNotFoundException\)"
    ):
        load_secret_credentials({"MODEL_LIB_MLFLOW_SECRET": "absent"})
    boto3.client("secretsmanager").create_secret(Name="half", SecretString=json.dumps({"username": "u", "pass": "p"}))
    with pytest.raises(
        ConfigError, match=r"holds \['pass', 'username'\]; expected a JSON object with \"username\" and \"password\""
    ):
        load_secret_credentials({"MODEL_LIB_MLFLOW_SECRET": "half"})
    boto3.client("secretsmanager").create_secret(Name="token", SecretString=json.dumps({"token": "t0k"}))
    environ = {"MODEL_LIB_MLFLOW_SECRET": "token"}
    assert load_secret_credentials(environ) == "token" and environ["MLFLOW_TRACKING_TOKEN"] == "t0k"


def test_sagemaker_managed_mlflow_by_arn_signed_with_the_job_credentials(aws_env, prepared, tmp_path):
    import boto3

    pytest.importorskip("sagemaker_mlflow")
    bucket = f"mlflow-{tmp_path.name}".lower().replace("_", "-")[:60]
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    server = start_mlflow_server(root, port, artifact_root=f"s3://{bucket}/mlflow")
    policy = Policy(sigv4=SigV4(access_key_id="testing", secret_access_key="testing", region="us-east-1", arn=ARN))
    experiment = f"managed {tmp_path.name}+plus"  # ' ' and '+' in a GET query: the plugin signs them as %20/%2B
    try:
        with auth_proxy(f"http://127.0.0.1:{port}", policy) as url:
            env = {"MLFLOW_TRACKING_URI": ARN, "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": url, "MLFLOW_EXPERIMENT_NAME": experiment}
            base, job = toolkit_job(tmp_path, prepared, env, "signed")
            assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
            assert policy.refused == []
            client, run = the_run(f"http://127.0.0.1:{port}", experiment)
            model = logged_model(client, run.info.run_id)
            stored = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="mlflow/")
            keys = [item["Key"] for item in stored.get("Contents", [])]
            assert any(key.endswith("/MLmodel") and model.model_id in key for key in keys)  # the model, straight to S3
            assert any(key.endswith("figures/roc.png") for key in keys)

            # Credentials the server does not accept: refused at start, nothing trained.
            base, job = toolkit_job(tmp_path, prepared, {**env, "AWS_SECRET_ACCESS_KEY": "not-the-key"}, "unsigned")
    finally:
        stop_server(server)
    assert job.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert f"ConfigError: MLflow at {ARN} refused this process: HTTP 403" in failure
    assert trained_nothing(base)
    assert any(line.startswith("403") for line in policy.refused)


def test_a_model_upload_that_fails_midway_is_sent_again_into_the_same_logged_model(mlflow_server, tmp_path):
    """The server takes the run, then refuses the model's first artifact uploads (503, past MLflow's
    own retries): the queued model record is sent again and the run ends with one complete model.
    (Also the local run's system metrics, sampled every 0.5 s through the same proxy.)"""
    import mlflow
    import yaml

    write_prepared(tmp_path / "data" / "prepared", count=400, max_length=40)
    params = {"train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "ngram_buckets": 4099}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    experiment = f"upload-{tmp_path.name}"
    policy = Policy(token="t0k", fail_uploads=3)
    with auth_proxy(mlflow_server, policy) as url:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_TOKEN": "t0k",
            "MLFLOW_EXPERIMENT_NAME": experiment,
            "MODEL_LIB_MLFLOW_WAIT_SECONDS": "60",
            "MODEL_LIB_SYSTEM_METRICS_SECONDS": "0.5",
        }
        result = subprocess.run(
            [str(BIN / "model-lib"), "train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(policy.failed_uploads) == 3 and policy.refused == []  # the token was sent with every request
    assert "did not take a record" in result.stderr and "answers again" in result.stderr
    client, run = the_run(mlflow_server, experiment, evaluated=False)
    # A local run holds this host's system metrics (one host: no host in the names), sampled while it trained.
    system = {name for name in run.data.metrics if name.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes", "system/disk_usage_percentage",
            "system/network_receive_megabytes"} <= system, sorted(run.data.metrics)  # fmt: skip
    assert len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")) >= 2
    model = logged_model(client, run.info.run_id)
    mlflow.set_tracking_uri(mlflow_server)  # models:/ URIs resolve against the current tracking URI
    try:
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}"))
    finally:  # process-wide: a later test of this worker would track there
        mlflow.set_tracking_uri(None)
    assert {"MLmodel", "mlflow_model.py", "requirements.txt"} <= {p.name for p in folder.iterdir()}
    assert not (tmp_path / "checkpoints" / "mlflow-pending.json").exists()


def files_holding(folder: Path, secret: str) -> list[str]:
    """Return the files under ``folder`` whose bytes hold ``secret``."""
    return [str(path) for path in folder.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


@pytest.mark.slow
def test_a_run_with_the_password_in_its_settings_prints_and_writes_it_nowhere(mlflow_server, tmp_path, tmp_path_factory):
    """`model-lib train` with the password in MLFLOW_TRACKING_URI, to a server behind basic auth that
    goes away when the run ends (our warning quotes MLflow's exception); `model-lib mlflow-sync` with it
    in MLFLOW_TRACKING_PASSWORD while the server is still away; then with it in the URI again, the server
    back (MLflow prints "View run ... at <url>"). stdout, stderr and every file written are grepped."""
    write_prepared(tmp_path / "data" / "prepared")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": TINY_TRAINING}), encoding="utf-8")
    experiment = f"secrets-{tmp_path.name}"
    unset = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    # No retries: each failed call fails at once (the outage costs no waiting).
    base.update(MLFLOW_EXPERIMENT_NAME=experiment, MODEL_LIB_MLFLOW_WAIT_SECONDS="0", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")

    def model_lib(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "model-lib"), *args]
        return subprocess.run(command, cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=600)

    sync = ["mlflow-sync", "--checkpoints", "checkpoints", "--wait", "0"]
    policy = Policy(basic=("grepped", GREPPED), down_at="/runs/update")  # away from the run's end (set_terminated) on
    with auth_proxy(mlflow_server, policy) as proxy:
        in_uri = f"http://grepped:{GREPPED}@{proxy.removeprefix('http://')}"
        trained = model_lib("train", MLFLOW_TRACKING_URI=in_uri)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "did not take a record (MlflowException: API request to" in trained.stderr  # MLflow's text, quoted
        away = model_lib(*sync, MLFLOW_TRACKING_URI=proxy, MLFLOW_TRACKING_USERNAME="grepped", MLFLOW_TRACKING_PASSWORD=GREPPED)
        assert away.returncode == 1 and "did not answer" in away.stdout, away.stderr[-3000:]
        policy.down, policy.down_at = False, None
        synced = model_lib(*sync, MLFLOW_TRACKING_URI=in_uri)
        assert synced.returncode == 0 and "View run" in synced.stdout, synced.stderr[-3000:]
    assert policy.refused == []  # the credentials were sent with every request, from the URI or the variables

    printed = {
        f"{name} {stream}": [line for line in getattr(result, stream).splitlines() if GREPPED in line]
        for name, result in (("train", trained), ("sync while away", away), ("sync", synced))
        for stream in ("stdout", "stderr")
    }
    assert printed == {name: [] for name in printed}
    servers = list(tmp_path_factory.getbasetemp().glob("mlflow*"))
    assert servers and any((root / "artifacts").is_dir() for root in servers)
    assert [path for folder in [tmp_path, *servers] for path in files_holding(folder, GREPPED)] == []
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.status == "FINISHED"
    logged_model(client, run.info.run_id)


def test_reading_the_secret_logs_nothing_of_its_value_even_at_debug(aws_env, caplog):
    """botocore logs every response body at DEBUG (`model-lib -v`): the secret's is not one of them."""
    import logging

    import boto3

    from model_lib.tracking import load_secret_credentials

    boto3.client("secretsmanager").create_secret(Name="debugged", SecretString=json.dumps({"token": "debug-t0ken-8e2"}))
    caplog.set_level(logging.DEBUG)
    # `model-lib` without -v sets botocore to WARNING for the process: another test's main() may have.
    caplog.set_level(logging.DEBUG, logger="botocore")
    environ = {"MODEL_LIB_MLFLOW_SECRET": "debugged"}
    assert load_secret_credentials(environ) == "debugged" and environ["MLFLOW_TRACKING_TOKEN"] == "debug-t0ken-8e2"
    assert "GetSecretValue" in caplog.text  # botocore did log the call at DEBUG
    assert "debug-t0ken-8e2" not in caplog.text
