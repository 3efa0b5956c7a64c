"""The authenticating stand-in (tests/standins/auth_proxy.py) in front of a real `mlflow server`, driven
by the real clients: MLflow's own basic/bearer auth from the environment, and the sagemaker-mlflow
plugin's SigV4 signing for an ARN tracking URI."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.standins.auth_proxy import auth_proxy, rejections, start_auth_proxy, stop_auth_proxy

pytestmark = pytest.mark.integration

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/test"
KEY_ID, SECRET, REGION = "AKIDSTANDIN0000000001", "standin-secret-key", "us-east-1"
SIGV4 = {"access_key_id": KEY_ID, "secret_access_key": SECRET, "region": REGION, "arn": ARN}
MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def http_status(error: BaseException) -> int:
    from mlflow.exceptions import MlflowException

    assert isinstance(error, MlflowException), repr(error)
    return error.get_http_status_code()


def raw(url: str, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with http.client (nothing added but Host and Content-Length); return status and body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def signed(
    url: str, method: str, target: str, body: bytes, secret: str = SECRET, arn: str = ARN, when: datetime.datetime | None = None
) -> dict[str, str]:
    """Headers for ``body`` sent to ``url + target``, signed with botocore as the plugin signs (without it)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {
        "Content-Type": "application/json",
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
        "x-mlflow-sm-tracking-server-arn": arn,
    }
    request = AWSRequest(method=method, url=url + target, data=body, headers=headers)
    auth = SigV4Auth(Credentials(KEY_ID, secret), "sagemaker-mlflow", REGION)
    if when is None:
        auth.add_auth(request)
    else:  # sign as of ``when``, as add_auth would have then
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        canonical = auth.canonical_request(request)
        auth._inject_signature_to_request(request, auth.signature(auth.string_to_sign(request, canonical), request))
    return dict(request.headers.items())


@pytest.fixture
def no_mlflow_credentials(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*MLFLOW_CREDENTIALS, "MLFLOW_TRACKING_URI", "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


CREDENTIAL_MODES = {
    "bearer": ({"token": "t0ken"}, {"MLFLOW_TRACKING_TOKEN": "t0ken"}, {"MLFLOW_TRACKING_TOKEN": "n0t-the-t0ken"}),
    "basic": (
        {"username": "alice", "password": "pa:ss word"},
        {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pa:ss word"},
        {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "n0t-the-password"},
    ),
}


@pytest.mark.parametrize("mode", sorted(CREDENTIAL_MODES))
def test_mlflow_client_through_basic_and_bearer(mode, mlflow_server, no_mlflow_credentials, tmp_path):
    import mlflow
    from mlflow.exceptions import MlflowException

    options, good, wrong = CREDENTIAL_MODES[mode]
    rejected = tmp_path / "rejected.txt"
    with auth_proxy(mlflow_server, mode, reject_count_file=rejected, **options) as url:
        monkeypatch = no_mlflow_credentials
        for name, value in good.items():
            monkeypatch.setenv(name, value)
        client = mlflow.MlflowClient(tracking_uri=url)
        client.search_experiments()
        experiment = client.create_experiment(f"auth-{mode}-{tmp_path.name}")
        run = client.create_run(experiment)
        payload = os.urandom(3 * 1024 * 1024)
        (tmp_path / "big.bin").write_bytes(payload)
        client.log_artifact(run.info.run_id, str(tmp_path / "big.bin"), "blobs")
        assert [(a.path, a.file_size) for a in client.list_artifacts(run.info.run_id, "blobs")] == [
            ("blobs/big.bin", len(payload))
        ]
        back = Path(client.download_artifacts(run.info.run_id, "blobs/big.bin", str(tmp_path / "back")))
        assert back.read_bytes() == payload
        assert rejections(rejected) == []

        for name, value in wrong.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(MlflowException) as wrong_credentials:
            mlflow.MlflowClient(tracking_uri=url).search_experiments()
        assert http_status(wrong_credentials.value) == 403

        for name in MLFLOW_CREDENTIALS:
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(MlflowException) as no_credentials:
            mlflow.MlflowClient(tracking_uri=url).get_experiment(experiment)
        assert http_status(no_credentials.value) == 401

    lines = rejections(rejected)
    assert len(lines) == 2 and lines[0].startswith("403 ") and lines[1].startswith("401 "), lines
    assert not any(secret in "\n".join(lines) for secret in (*options.values(), *wrong.values()) if secret != "alice")


def test_chunked_bodies_health_and_sigterm(mlflow_server, tmp_path):
    process, url = start_auth_proxy(mlflow_server, "bearer", token="t0ken")
    try:
        assert raw(url, "GET", "/health")[0] == 200  # no credentials needed
        query = json.dumps({"max_results": 5}).encode()
        pieces = iter([query[:3], query[3:]])
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"Authorization": "Bearer t0ken", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        connection.request("POST", "/api/2.0/mlflow/experiments/search", body=pieces, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 200 and "experiments" in json.loads(response.read())
        connection.request("GET", "/api/2.0/mlflow/experiments/get?experiment_id=0", headers={"Authorization": "Bearer t0ken"})
        response = connection.getresponse()  # the same kept-alive connection
        assert response.status == 200 and json.loads(response.read())["experiment"]["name"] == "Default"
        connection.close()
        status, body = raw(url, "POST", "/api/2.0/mlflow/experiments/search", b"x" * 100_000)  # rejected, body drained
        assert status == 401 and json.loads(body)["error_code"] == "UNAUTHENTICATED"
    finally:
        assert stop_auth_proxy(process) == 0


def test_sigv4_signatures_checked(mlflow_server, tmp_path):
    pytest.importorskip("botocore")
    rejected = tmp_path / "rejected.txt"
    with auth_proxy(mlflow_server, "sigv4", reject_count_file=rejected, **SIGV4) as url:
        target, body = "/api/2.0/mlflow/experiments/search", json.dumps({"max_results": 1}).encode()
        assert raw(url, "POST", target, body, signed(url, "POST", target, body))[0] == 200
        get = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        assert raw(url, "GET", get, b"", signed(url, "GET", get, b""))[0] == 200

        assert raw(url, "POST", target, body, {"Content-Type": "application/json"})[0] == 401
        tampered = json.dumps({"max_results": 2}).encode()
        assert raw(url, "POST", target, tampered, signed(url, "POST", target, body))[0] == 403
        assert raw(url, "POST", target, body, signed(url, "POST", target, body, secret="other"))[0] == 403
        assert raw(url, "POST", target, body, signed(url, "POST", target, body, arn=ARN + "x"))[0] == 403
        stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        assert raw(url, "POST", target, body, signed(url, "POST", target, body, when=stale))[0] == 403
        headers = signed(url, "POST", target, body)
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(tampered).hexdigest()
        assert raw(url, "POST", target, tampered, headers)[0] == 403  # the checksum is signed too
    lines = rejections(rejected)
    assert [line.split()[0] for line in lines] == ["401", "403", "403", "403", "403", "403"], lines
    assert SECRET not in "\n".join(lines)


@pytest.fixture
def sagemaker_plugin_env(no_mlflow_credentials: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment a SageMaker training job gives the plugin, and the global tracking URI set to the ARN
    (both restored afterwards)."""
    pytest.importorskip("sagemaker_mlflow")
    import mlflow
    from mlflow.tracking._tracking_service import utils

    monkeypatch = no_mlflow_credentials
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ARN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN", raising=False)
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # put back on teardown
    mlflow.set_tracking_uri(ARN)
    yield monkeypatch


def test_sagemaker_plugin_through_sigv4(mlflow_server, sagemaker_plugin_env, tmp_path):
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    rejected = tmp_path / "rejected.txt"
    with auth_proxy(mlflow_server, "sigv4", reject_count_file=rejected, **SIGV4) as url:
        sagemaker_plugin_env.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", url)
        client = mlflow.MlflowClient()
        name = f"sigv4 {tmp_path.name}+plus"  # spaces and '+' in a GET query: the plugin signs them as %20/%2B
        experiment = client.create_experiment(name)
        run = client.create_run(experiment)
        now = int(time.time() * 1000)
        metrics = [Metric("val loss", 1.0 / (step + 1), now + step, step) for step in range(5)]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("lr", "0.01"), Param("epochs", "3")])
        history = client.get_metric_history(run.info.run_id, "val loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(m.step, m.value) for m in metrics]
        assert client.get_experiment_by_name(name).experiment_id == experiment
        assert client.get_run(run.info.run_id).data.params == {"lr": "0.01", "epochs": "3"}
        client.set_terminated(run.info.run_id)
        assert rejections(rejected) == []

        sagemaker_plugin_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(MlflowException) as wrong_secret:
            mlflow.MlflowClient().get_run(run.info.run_id)
        # AWS's refusal body carries no MLflow error code: the client calls it a server error (500),
        # which is why model_lib asks once by HTTP status before training (tracking._check_not_refused).
        assert "auth-proxy:" in str(wrong_secret.value)
        assert http_status(wrong_secret.value) == 500
    assert [line.split()[0] for line in rejections(rejected)] == ["403"]
    assert mlflow.MlflowClient(tracking_uri=mlflow_server).get_run(run.info.run_id).info.status == "FINISHED"
