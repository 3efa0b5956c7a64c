"""A big model upload over a slow or stalling link, with a real `mlflow server` behind a forwarding
proxy on real sockets (tests/standins/throttle_proxy.py), through the tracker as training calls it.

The links are scaled down so that the file stays fast: a file of a few MB (logged beside the shared
tiny model, which is small), 1 MB/s, and
MLFLOW_HTTP_REQUEST_TIMEOUT=2 (the user's bound for every call) in the place of the default 10 s.
"""

import hashlib
import json
import logging
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from model_lib.tracking import PENDING_FILE, open_tracker
from tests.conftest import TINY_TRAINING, logged_model
from tests.standins.throttle_proxy import Link, throttle_proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = ["a wonderful, moving film", "dull and far too long"]
RATE = 1_000_000  # bytes per second, client to server
BASE_TIMEOUT = 2  # MLFLOW_HTTP_REQUEST_TIMEOUT: less than the link needs to carry the model's largest file
BIG_FILE_BYTES = 3_000_000
STALL_TIMEOUT = 3  # MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT in the stall tests


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """A file of a few MB (of random bytes: no link compresses it), as a large model file is."""
    path = tmp_path_factory.mktemp("throttled") / "weights.bin"
    path.write_bytes(os.urandom(BIG_FILE_BYTES))
    return path


@pytest.fixture
def trained(tiny_training, big_file):
    """The shared tiny training's raw model and model file, and the big file; the model is small
    (whatever the default model weighs), the big file is what tests the link."""
    return tiny_training, big_file


@pytest.fixture
def tracking_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"throttled-{tmp_path.name}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(BASE_TIMEOUT))
    monkeypatch.setenv("MODEL_LIB_SYSTEM_METRICS", "false")
    return monkeypatch


def train_and_log(url, tmp_path, trained, monkeypatch):
    """Open a tracker at ``url`` and log as the run lifecycle does (params, epochs, test metrics, the
    big file as an artifact, the model); return the tracker and how long each upload call kept the
    caller (seconds by call)."""
    training, big_file = trained
    result = training.result
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    tracker = open_tracker(pending_file=tmp_path / "checkpoints" / PENDING_FILE)
    tracker.log_params(dict(TINY_TRAINING))
    for row in result.history:
        tracker.log_epoch(int(row["epoch"]) - 1, {k: float(v) for k, v in row.items() if k != "epoch"})
    tracker.log_metrics({"test_accuracy": 0.5, "train_seconds": result.train_seconds})
    took = {}
    started = time.monotonic()
    tracker.log_artifacts([big_file], artifact_path="model")
    took["log_artifacts"] = time.monotonic() - started
    started = time.monotonic()
    tracker.log_model(result.raw_model, training.model_file, EXAMPLES, step=1)
    took["log_model"] = time.monotonic() - started
    return tracker, took


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_run_whole(server: str, experiment: str, big_file: Path, tmp_path: Path, monkeypatch) -> Any:
    """The run is FINISHED with every metric, its big artifact has the local file's bytes,
    and its logged model is READY with its files."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # mlflow-artifacts: URIs resolve against it, not the proxy

    client = mlflow.MlflowClient(tracking_uri=server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert {"loss", "val_loss", "test_accuracy", "train_seconds"} <= set(run.data.metrics)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [0, 1, 2]
    downloaded = Path(client.download_artifacts(run.info.run_id, f"model/{big_file.name}", str(tmp_path)))
    assert md5(downloaded) == md5(big_file)
    model = logged_model(client, run.info.run_id)  # READY: every file checked whole before it was marked so
    # Asked of the server itself: MLflow's client keeps the proxy's address for the model's artifacts.
    where = urllib.parse.quote(model.artifact_location.removeprefix("mlflow-artifacts:/"), safe="")
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow-artifacts/artifacts?path={where}", timeout=30) as answer:
        files = {entry["path"] for entry in json.load(answer)["files"]}
    assert {"MLmodel", "artifacts", "requirements.txt"} <= files, files  # artifacts/saved_model: the export
    return run


def test_a_model_of_a_few_mb_arrives_whole_through_a_1_mb_s_link(mlflow_server, trained, tracking_env, tmp_path):
    """The proxy buffers uploads and forwards them at 1 MB/s: each answer comes seconds after the
    client's last byte, past the 2 s bound of every call, within the bound scaled to the file."""
    link = Link(rate=RATE, buffered=True)
    with throttle_proxy(mlflow_server, link) as url:
        tracker, took = train_and_log(url, tmp_path, trained, tracking_env)
        assert tracker.pending == []  # nothing waited: both uploads went through the first time
        assert tracker.end()
    big_file = trained[1]
    assert took["log_artifacts"] >= big_file.stat().st_size / RATE > BASE_TIMEOUT  # it went at the link's pace
    check_run_whole(mlflow_server, f"throttled-{tmp_path.name}", big_file, tmp_path, tracking_env)
    assert not (tmp_path / "checkpoints" / PENDING_FILE).exists()


def test_a_stalled_upload_costs_the_caller_its_bound_and_is_sent_whole_at_the_end(mlflow_server, trained, tracking_env, tmp_path):
    """Every upload stalls after 256 KB (the proxy stops reading, then cuts the connection): the call
    returns after the upload bound, the records wait in the pending file, training calls go on at
    once; the link comes back and the run's end sends the model file and the model whole."""
    tracking_env.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", str(STALL_TIMEOUT))
    tracking_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one attempt per call: the bound is the timeout
    link = Link(stall=True, hold_seconds=STALL_TIMEOUT + 2)  # past the timeout, then the body is cut
    with throttle_proxy(mlflow_server, link) as url:
        tracker, took = train_and_log(url, tmp_path, trained, tracking_env)
        assert STALL_TIMEOUT <= took["log_artifacts"] < STALL_TIMEOUT + 3
        assert tracker.pending == ["artifacts", "model"]
        assert (tmp_path / "checkpoints" / PENDING_FILE).is_file()
        started = time.monotonic()
        tracker.log_metrics({"late_metric": 1.0})  # training goes on: nothing waits for the server meanwhile
        assert time.monotonic() - started < 1
        assert len(link.stalled) == 1 and link.stalled[0].endswith("/model/weights.bin")
        time.sleep(link.hold_seconds - STALL_TIMEOUT)  # the proxy cuts the body: the server must not keep half
        link.stall = False
        assert tracker.end()
    run = check_run_whole(mlflow_server, f"throttled-{tmp_path.name}", trained[1], tmp_path, tracking_env)
    assert "late_metric" in run.data.metrics


def test_an_upload_that_never_gets_through_is_named_at_the_end_and_the_server_holds_no_half_file(
    mlflow_server, trained, tracking_env, tmp_path, caplog
):
    import mlflow

    tracking_env.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", str(STALL_TIMEOUT))
    tracking_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking_env.setenv("MODEL_LIB_MLFLOW_WAIT_SECONDS", "1")
    link = Link(stall=True, hold_seconds=STALL_TIMEOUT + 1)
    with throttle_proxy(mlflow_server, link) as url, caplog.at_level(logging.WARNING, logger="model_lib.tracking"):
        tracker, _ = train_and_log(url, tmp_path, trained, tracking_env)
        assert not tracker.end()
        time.sleep(1.5)  # the last stalled body is cut
    training, big_file = trained
    held_back = f"{big_file}, the model {training.model_file}"
    assert f"does not hold these files yet (they go with the records above): {held_back}" in caplog.text
    assert "send them with `model-lib mlflow-sync --checkpoints" in caplog.text
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(f"throttled-{tmp_path.name}").experiment_id])
    assert len(link.stalled) == 2
    assert client.list_artifacts(run.info.run_id, "model") == []  # cut twice, kept never
