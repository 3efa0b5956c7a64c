"""Managed spot training, proven with real processes: a toolkit job killed (SIGKILL) at random
steps and during a checkpoint write, or stopped with SIGTERM, and restarted on the same base dir,
ends with bitwise the weights of a job never interrupted, in one MLflow run."""

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from model_lib import checkpoints
from model_lib.sagemaker.basedir import encode_hyperparameters, lay_out
from model_lib.sagemaker.supervise import run_toolkit, start_toolkit, wait_for_job
from tests.conftest import BIN, REPO, write_prepared

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# About 100 steps an epoch, a checkpoint every 10 steps, arrays of a few MB: each save takes long
# enough to be caught in the middle.
HPS = {"epochs": 3, "batch_size": 8, "learning_rate": 0.01, "ngram_buckets": 100003, "patience": 5, "checkpoint_steps": 10}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("spot") / "data" / "prepared", count=1200, max_length=40)


@pytest.fixture(scope="module")
def straight_weights(prepared, tmp_path_factory):
    """Final weights of the job run once, never interrupted."""
    base = job_base(tmp_path_factory.mktemp("straight"), prepared)
    assert run_toolkit(base, timeout=600) == 0
    return final_weights(base)


def job_base(folder: Path, prepared: dict[str, Path]) -> Path:
    base = folder / "opt_ml"
    lay_out(base, encode_hyperparameters(HPS), prepared, REPO / "entry_point")
    return base


def final_weights(base: Path) -> list[np.ndarray]:
    from model_lib.inference import core_model, load_model

    return core_model(load_model(base / "model" / "model.keras")).get_weights()


def assert_bitwise_equal(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y), "weights differ from the uninterrupted run"


def newest_generation(base: Path) -> int:
    numbers = checkpoints.generation_numbers(base / "checkpoints")
    return numbers[0] if numbers else 0


def writes_in_progress(base: Path) -> list[Path]:
    return list((base / "checkpoints").glob(".gen-*.tmp"))


def wait_until(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the job ended (exit {process.returncode}) before it could be interrupted"
        assert time.monotonic() < deadline, "the job made no checkpoint in time"
        time.sleep(0.002)


def test_job_killed_three_times_ends_with_the_uninterrupted_weights_in_one_mlflow_run(
    prepared, straight_weights, tmp_path, mlflow_server
):
    import mlflow

    experiment = f"spot-{tmp_path.name}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": experiment}
    base = job_base(tmp_path, prepared)
    rng = random.Random(7)
    for mode in ("random step", "during a checkpoint write", "random step"):
        before = newest_generation(base)
        process = start_toolkit(base, env)
        wait_until(lambda before=before: newest_generation(base) > before, process)  # training runs, past a new checkpoint
        if mode == "during a checkpoint write":
            wait_until(lambda: bool(writes_in_progress(base)), process)
        else:
            time.sleep(rng.uniform(0.0, 0.5))
        os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a reclaimed instance loses it
        assert process.wait(timeout=30) == -signal.SIGKILL
        if mode == "during a checkpoint write":
            assert writes_in_progress(base), "the kill did not land inside a checkpoint write"
    assert wait_for_job(start_toolkit(base, env), timeout=600) == 0
    assert not (base / "output" / "failure").exists()

    assert_bitwise_equal(final_weights(base), straight_weights)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1  # one job, one run, across three restarts
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["model_lib.restarts"] == "3"
    for metric in ("loss", "val_loss", "val_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, metric)) == [0, 1, 2]
    assert "test_accuracy" in run.data.metrics
    # A finished job retires its state: the final generation stays (for checkpoint_s3_uri), never resumed.
    assert len(checkpoints.generation_numbers(base / "checkpoints")) == 1
    assert checkpoints.latest(base / "checkpoints") is None


def running_in_group(pgid: int) -> list[int]:
    """PIDs of group ``pgid`` still running; one that exited and awaits its reaping is not."""
    import psutil

    running = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                running.append(process.pid)
    return running


def model_lib_job(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "model-lib"), "sagemaker-local", "--source-dir", str(REPO / "entry_point"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterm_saves_the_state_exits_within_10_s_and_the_rerun_resumes(prepared, straight_weights, tmp_path):
    import yaml

    work = prepared["train"].parents[2]
    (work / "params.yaml").write_text(yaml.safe_dump({"train": HPS}), encoding="utf-8")
    base = tmp_path / "job"
    job = model_lib_job("--base-dir", str(base), cwd=work)
    wait_until(lambda: newest_generation(base) > 0, job)
    sent = time.monotonic()
    job.send_signal(signal.SIGTERM)  # to the job's own process, as `docker stop` signals the container
    code = job.wait(timeout=30)
    stopped_after = time.monotonic() - sent
    output = job.stdout.read()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert stopped_after < 10, f"stopped {stopped_after:.1f} s after SIGTERM:\n{output[-3000:]}"
    assert "SIGTERM received: saving the training state" in output  # the signal reached the training script
    newest = checkpoints.latest(base / "checkpoints")
    assert newest is not None and newest.state["step"] + newest.state["epoch"] > 0

    resumed = model_lib_job("--base-dir", str(base), "--keep", cwd=work)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming at epoch {newest.state['epoch'] + 1}, step {newest.state['step']}" in output
    assert_bitwise_equal(final_weights(base), straight_weights)

    # A finished job retired its checkpoints: the next job on the same base dir trains afresh.
    again = model_lib_job("--base-dir", str(base), "--keep", cwd=work)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    assert "resuming" not in output
    assert json.loads((base / "model" / "metrics.json").read_text())["epochs_run"] == 3
    assert_bitwise_equal(final_weights(base), straight_weights)


def test_the_toolkit_does_not_pass_sigterm_on_so_the_job_wait_does(prepared, tmp_path):
    """Which process gets what: SIGTERM to the toolkit's `train` alone ends it at once and leaves
    the training script running as an orphan. That is why the image runs `tini -g` and why
    sagemaker-local signals the job's whole process group (the test above); and the job's wait
    returns only when no process of the job is left."""
    base = job_base(tmp_path, prepared)
    process = start_toolkit(base)
    wait_until(lambda: newest_generation(base) > 0, process)
    os.kill(process.pid, signal.SIGTERM)  # the toolkit only
    assert process.wait(timeout=30) == -signal.SIGTERM
    time.sleep(1.0)
    os.killpg(process.pid, 0)  # still there: the orphaned training script trains on
    assert wait_for_job(process, timeout=600) == 128 + signal.SIGTERM
    assert running_in_group(process.pid) == []  # nobody is left running in the job's process group
    assert (base / "model" / "model.keras").is_file()  # the orphan finished and wrote the model
