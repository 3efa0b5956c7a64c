"""`tox -e image`: the training image, built here (docker/build_image.py) and run the way SageMaker
runs it: `<engine> run --rm --network none --hostname algo-1 -v <job folder>:/opt/ml IMAGE train`.

The job folder is what SageMaker mounts at /opt/ml: input/config/*.json (hyperparameters encoded as
the SDK encodes them, one host algo-1), one file per channel under input/data/<channel>/, and the
submitted code as a sourcedir.tar.gz that the toolkit unpacks into the empty /opt/ml/code. No
MLflow: the job runs without MLFLOW_TRACKING_URI. The SIGTERM test proves the entry point
(tini, then docker/job_init.py) keeps the container up until the training script has saved its state.

Skipped, with the reason, only where the image cannot be built here (no Docker engine and buildah/
podman cannot be installed: not root, no apt-get; too little disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from model_lib import checkpoints
from model_lib.sagemaker.basedir import encode_hyperparameters, lay_out
from tests.conftest import REPO, write_prepared
from tests.image.conftest import Image

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.slow]

SIGTERM_EXIT = 128 + 15
# Small and quick: the success and failure jobs.
QUICK = {"epochs": 2, "ngram_buckets": 4096}
# ~135 steps an epoch, a checkpoint every 30 steps, more epochs than the test waits for; the default
# 2M n-gram buckets make each save ~65 MB, long enough that a container ending with the toolkit's
# `train` (which dies at once on SIGTERM) would kill the training script in the middle of it.
LONG = {"epochs": 50, "batch_size": 8, "patience": 50, "checkpoint_steps": 30}


def job_folder(folder: Path, hyperparameters: Mapping[str, object], count: int = 240, max_length: int = 40) -> Path:
    """Lay out /opt/ml for one job on tiny prepared data; return the folder to mount there."""
    prepared = write_prepared(folder / "prepared", count=count, max_length=max_length)
    base = folder / "opt_ml"
    lay_out(base, encode_hyperparameters(dict(hyperparameters)), prepared, REPO / "entry_point")
    # The submitted code, as the SDK uploads it: a sourcedir.tar.gz, unpacked by the toolkit into /opt/ml/code.
    with tarfile.open(base / "sourcedir.tar.gz", "w:gz") as archive:
        archive.add(REPO / "entry_point" / "train.py", arcname="train.py")
    config = base / "input" / "config"
    hyperparameters_file = config / "hyperparameters.json"
    values = json.loads(hyperparameters_file.read_text())
    values["sagemaker_submit_directory"] = json.dumps("/opt/ml/sourcedir.tar.gz")
    hyperparameters_file.write_text(json.dumps(values, indent=2))
    # One host named as SageMaker names it (the container's --hostname).
    resources = json.loads((config / "resourceconfig.json").read_text())
    resources.update(current_host="algo-1", hosts=["algo-1"], network_interface_name="eth0")
    resources["instance_groups"][0]["hosts"] = ["algo-1"]
    resources["instance_groups"][0]["instance_type"] = resources["current_instance_type"] = "ml.m5.large"
    (config / "resourceconfig.json").write_text(json.dumps(resources, indent=2))
    return base


def run_command(image: Image, base: Path, name: str) -> list[str]:
    command = [
        image.engine, "run", "--rm", "--name", name, "--network", "none", "--hostname", "algo-1",
        "-e", f"TRAINING_JOB_NAME={name}",
    ]  # fmt: skip
    if image.engine == "podman":
        command.append("--no-healthcheck")  # podman 4.3 treats HEALTHCHECK NONE as one and asks systemd for a timer
    return [*command, "-v", f"{base}:/opt/ml", image.name, "train"]


def run_job(image: Image, base: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    name = f"model-lib-test-{uuid.uuid4().hex[:8]}"
    return subprocess.run(run_command(image, base, name), env=image.env, capture_output=True, text=True, timeout=timeout)


def failure(base: Path) -> str:
    path = base / "output" / "failure"
    return path.read_text() if path.is_file() else ""


def test_job_trains_writes_a_model_that_predicts_raw_strings_and_reports(image: Image, tmp_path: Path) -> None:
    base = job_folder(tmp_path, QUICK)
    done = run_job(image, base)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert not failure(base)
    assert (base / "code" / "train.py").is_file()  # the toolkit unpacked the submitted code
    model = base / "model" / "model.keras"
    assert model.is_file() and (base / "model" / "vocab.txt").is_file() and (base / "model" / "metrics.json").is_file()
    reports = {p.name for p in (base / "output" / "data").iterdir()}
    assert {"metrics.json", "history.csv", "roc.csv", "confusion.csv"} <= reports, reports
    assert any(name.endswith(".png") for name in reports), reports
    assert len(json.loads((base / "model" / "metrics.json").read_text())["test"]) > 0

    from model_lib.inference import load_model, predict

    probabilities = predict(load_model(model), ["a wonderful , moving film", "a dull , boring film", "unseen words only"])
    assert probabilities.shape == (3,) and ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize(
    ("hyperparameters", "named"),
    [({**QUICK, "epochs": -1}, "epochs"), ({**QUICK, "epoch": 3}, "'epoch'")],
    ids=["epochs=-1", "unknown-key"],
)
def test_bad_hyperparameter_fails_the_job_and_the_failure_file_names_it(
    image: Image, tmp_path: Path, hyperparameters: dict[str, object], named: str
) -> None:
    base = job_folder(tmp_path, hyperparameters)
    done = run_job(image, base)
    assert done.returncode != 0, done.stdout[-2000:]
    reason = failure(base)
    assert reason.startswith("ConfigError:") and named in reason.splitlines()[0], reason[:500]
    assert not (base / "model" / "model.keras").exists()


def test_empty_channel_fails_the_job_and_the_failure_file_names_the_channel(image: Image, tmp_path: Path) -> None:
    base = job_folder(tmp_path, QUICK)
    for path in (base / "input" / "data" / "vocab").iterdir():
        path.unlink()
    done = run_job(image, base)
    assert done.returncode != 0, done.stdout[-2000:]
    first_line = failure(base).splitlines()[0] if failure(base) else ""
    assert "channel 'vocab'" in first_line and "empty" in first_line, failure(base)[:500]


@pytest.fixture
def named_container(image: Image) -> Iterator[str]:
    name = f"model-lib-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run([image.engine, "rm", "--force", name], env=image.env, capture_output=True, timeout=120)


def test_sigterm_during_training_saves_a_checkpoint_and_exits_143_within_seconds(
    image: Image, tmp_path: Path, named_container: str
) -> None:
    base = job_folder(tmp_path, LONG, count=1200)
    with (tmp_path / "job.log").open("w") as log:
        started = time.monotonic()
        job = subprocess.Popen(run_command(image, base, named_container), env=image.env, stdout=log, stderr=subprocess.STDOUT)
        while not checkpoints.generation_numbers(base / "checkpoints"):
            assert job.poll() is None, f"the job ended (exit {job.returncode}) before its first checkpoint"
            assert time.monotonic() < started + 600, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        seen = checkpoints.generation_numbers(base / "checkpoints")[0]
        signalled = time.monotonic()
        kill = [image.engine, "kill", "--signal", "TERM", named_container]
        subprocess.run(kill, env=image.env, check=True, capture_output=True, timeout=60)
        code = job.wait(timeout=120)
        seconds = time.monotonic() - signalled
    output = (tmp_path / "job.log").read_text(errors="replace")
    assert code == SIGTERM_EXIT, output[-4000:]
    assert seconds < 30, f"the job took {seconds:.1f} s to stop"
    # The training script saved its state on the signal and finished the write before the container ended.
    assert "training stopped by SIGTERM: state saved" in output, output[-4000:]
    newest = checkpoints.generation_numbers(base / "checkpoints")[0]
    assert newest > seen, output[-4000:]
    assert not list((base / "checkpoints").glob(".gen-*")), "a checkpoint write was cut short"
    latest = checkpoints.latest(base / "checkpoints")
    assert latest is not None and latest.number == newest
    assert not failure(base)
    print(
        f"first checkpoint {signalled - started:.1f} s after `run`; SIGTERM to exit {seconds:.1f} s;"
        f" generation {seen} at the signal, {newest} after",
        file=sys.stderr,
    )
