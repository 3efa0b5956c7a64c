"""Training never dies because of MLflow, proven with a real `mlflow server` process stopped and
started around a real toolkit job."""

import re
import subprocess
import time

import pytest

from model_lib import checkpoints
from model_lib.sagemaker.local import data_digests_env
from model_lib.sagemaker.supervise import start_toolkit
from model_lib.tracking import PENDING_FILE
from model_lib.tracking.lineage import input_md5
from tests.conftest import BIN, free_port, logged_datasets, logged_model, start_mlflow_server, stop_server, write_prepared
from tests.integration.test_spot_resume import job_base, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("outage") / "prepared", count=1200, max_length=40)


def one_finished_run_with_everything(uri: str, experiment: str, prepared: dict):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, "the run was never created"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for metric in ("loss", "val_loss", "val_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, metric)) == [0, 1, 2]  # each epoch once
    assert {"test_accuracy", "train_seconds"} <= set(run.data.metrics)
    assert run.data.params["epochs"] == "3" and "git_commit" in run.data.tags
    logged_model(client, run.info.run_id)  # exactly one, READY, even with records sent twice
    datasets = logged_datasets(client, run.info.run_id)  # each once, even with records sent twice
    assert {n: d["digest"] for n, d in datasets.items()} == {n: input_md5(p) for n, p in prepared.items()}
    return run


def test_server_killed_after_epoch_1_and_back_10_s_later(prepared, tmp_path):
    """The job goes on and ends; its run holds everything, the system metrics sampled meanwhile too."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    root = tmp_path / "mlflow"
    root.mkdir()
    server = start_mlflow_server(root, port)
    base = job_base(tmp_path, prepared)
    experiment = f"outage-{tmp_path.name}"
    job = subprocess.Popen(
        [str(BIN / "python"), "-c", "from model_lib.sagemaker.supervise import run_toolkit; import sys; "
         f"sys.exit(run_toolkit(__import__('pathlib').Path({str(base)!r}), "
         f"{{'MLFLOW_TRACKING_URI': {uri!r}, 'MLFLOW_EXPERIMENT_NAME': {experiment!r}, "
         f"'MODEL_LIB_SYSTEM_METRICS_SECONDS': '0.5', **{data_digests_env(prepared)!r}}}))"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        generation = lambda: checkpoints.latest(base / "checkpoints")  # noqa: E731
        wait_until(lambda: (g := generation()) is not None and g.state["epoch"] >= 1, job)
        stop_server(server)
        killed, killed_at = time.monotonic(), time.time()
        time.sleep(10)
        back_at = time.time()
        server = start_mlflow_server(root, port)
        output = job.communicate(timeout=600)[0]
    finally:
        stop_server(server)
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-4000:]
    assert (base / "model" / "model.keras").is_file() and (base / "model" / "metrics.json").is_file()
    assert time.monotonic() - killed > 10
    server = start_mlflow_server(root, port)
    try:
        run = one_finished_run_with_everything(uri, experiment, prepared)
        import mlflow

        # The system metrics sampled while the server was away were kept, and sent once it was back.
        history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        stamps = sorted(m.timestamp / 1000 for m in history)
        assert any(killed_at < t < back_at for t in stamps), (killed_at, back_at, stamps)
    finally:
        stop_server(server)
    assert not (base / "checkpoints" / PENDING_FILE).exists()


def test_server_down_for_the_whole_job_then_mlflow_sync_sends_everything(prepared, tmp_path):
    port = free_port()  # nothing listens here while the job runs
    uri = f"http://127.0.0.1:{port}"
    experiment = f"down-{tmp_path.name}"
    base = job_base(tmp_path, prepared)
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": experiment, "MODEL_LIB_MLFLOW_WAIT_SECONDS": "3",
           **data_digests_env(prepared)}  # as launch sets it: the splits' .dir md5s  # fmt: skip
    job = subprocess.run(
        [str(BIN / "python"), "-c", "from model_lib.sagemaker.supervise import run_toolkit; import sys, pathlib; "
         f"sys.exit(run_toolkit(pathlib.Path({str(base)!r}), {env!r}))"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert (base / "model" / "model.keras").is_file()
    # The system metrics wait with the rest (sampled every 10 s: at least the last one, at the end).
    pattern = r"not sent yet: start, 2 params, 2 tags, 4 dataset, 3 epoch, 2 metrics, 2 artifacts, model, (\d+ )?system, end"
    assert re.search(pattern, output)
    assert "model-lib mlflow-sync --checkpoints" in output
    assert (base / "checkpoints" / PENDING_FILE).is_file()

    root = tmp_path / "mlflow"
    root.mkdir()
    server = start_mlflow_server(root, port)
    try:
        sync = subprocess.run(
            [str(BIN / "model-lib"), "mlflow-sync", "--checkpoints", str(base / "checkpoints")],
            env={**__import__("os").environ, "MLFLOW_TRACKING_URI": uri},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert sync.returncode == 0, sync.stdout + sync.stderr[-3000:]
        assert "sent every record" in sync.stdout
        run = one_finished_run_with_everything(uri, experiment, prepared)
        assert "system/cpu_utilization_percentage" in run.data.metrics
    finally:
        stop_server(server)
    assert not (base / "checkpoints" / PENDING_FILE).exists()


def test_a_tracking_uri_that_cannot_work_fails_before_training(prepared, tmp_path):
    base = job_base(tmp_path, prepared)
    started = time.monotonic()
    process = start_toolkit(base, {"MLFLOW_TRACKING_URI": "ftp://mlflow.example.com"})
    assert process.wait(timeout=300) != 0
    failure = (base / "output" / "failure").read_text()
    assert "ConfigError: MLFLOW_TRACKING_URI='ftp://mlflow.example.com': unknown scheme 'ftp'" in failure
    assert checkpoints.generation_numbers(base / "checkpoints") == []  # nothing trained
    assert time.monotonic() - started < 120


def test_make_mlflow_server_starts_a_shared_server_in_one_command(tmp_path):
    import os
    import signal
    import urllib.request

    from tests.conftest import REPO

    port = free_port()
    command = ["make", "-s", "mlflow-server", f"MLFLOW_PORT={port}", f"MLFLOW_BACKEND=sqlite:///{tmp_path}/mlflow.db"]
    command += [f"MLFLOW_ARTIFACTS={tmp_path}/artifacts", f"BIN={BIN}", f"STAMP={tmp_path}/no-venv-needed"]
    (tmp_path / "no-venv-needed").touch()
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, "make mlflow-server exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "no answer from the server"
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
