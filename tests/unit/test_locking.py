"""The folder lock, between real processes: a second holder is refused with the first named, a killed
holder leaves no stale lock, a waiter gets the lock once it is let go; and a fresh sqlite MLflow
store opened by several processes at once ends whole."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from model_lib import locking
from model_lib.errors import FolderLockError
from model_lib.tracking import PENDING_FILE
from tests.conftest import BIN, REPO

HOLDER = textwrap.dedent(
    """
    import sys, time
    from model_lib import locking
    with locking.hold(sys.argv[1], "training"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def start_holder(lock: Path, seconds: float = 60.0) -> subprocess.Popen[str]:
    """Start a process that holds ``lock`` for ``seconds``; return it once it holds it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), str(seconds)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    lock = tmp_path / "checkpoints" / locking.TRAINING_LOCK
    first = start_holder(lock)
    try:
        with pytest.raises(FolderLockError) as refused, locking.hold(lock, "training"):
            pass
    finally:
        first.kill()
        first.wait()
    message = str(refused.value)
    assert message.startswith(f"{lock}: expected no other process using {lock.parent}, got pid {first.pid}")
    assert f"on host {socket.gethostname()}, training since 20" in message


def test_mlflow_sync_refuses_a_checkpoint_folder_a_training_holds(tmp_path):
    # The training sends and rewrites the folder's pending file itself: two senders would interleave.
    lock = tmp_path / "checkpoints" / locking.TRAINING_LOCK
    training = start_holder(lock)
    (lock.parent / PENDING_FILE).write_text(json.dumps({"run_id": None, "queue": [{"op": "start", "experiment": "x"}]}))
    try:
        sync = subprocess.run(
            [str(BIN / "model-lib"), "mlflow-sync", "--checkpoints", str(lock.parent)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        training.kill()
        training.wait()
    assert sync.returncode == 2, sync.stdout + sync.stderr
    assert f"{lock}: expected no other process using {lock.parent}, got pid {training.pid} " in sync.stderr


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / locking.TRAINING_LOCK
    first = start_holder(lock)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with locking.hold(lock, "training"):
        assert f"pid {os.getpid()} " in locking.holder(lock)


def test_a_waiter_gets_the_lock_once_the_holder_lets_go(tmp_path):
    lock = tmp_path / locking.TRAINING_LOCK
    first = start_holder(lock, seconds=1.0)
    began = time.monotonic()
    with locking.hold(lock, "training", wait=30):
        waited = time.monotonic() - began
    first.wait()
    assert first.returncode == 0 and 0.3 < waited < 30


def test_a_process_may_take_its_own_lock_again_and_holds_it_until_the_outer_release(tmp_path):
    lock = tmp_path / locking.TRAINING_LOCK
    with locking.hold(lock, "training"):
        with locking.hold(lock, "training"):
            pass
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER, str(lock), "0"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "FolderLockError" in probe.stderr  # still held after the inner release
    start_holder(lock, seconds=0).wait()  # released by the outer one


def test_a_folder_that_cannot_hold_the_lock_is_named(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(FolderLockError, match=f"^{blocker}/training.lock: expected a writable folder"):
        with locking.hold(blocker / locking.TRAINING_LOCK, "training"):
            pass


def test_sqlite_file_of_a_tracking_uri():
    assert locking.sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert locking.sqlite_file("sqlite:////tmp/x/mlflow.db?timeout=5") == Path("/tmp/x/mlflow.db")
    assert locking.sqlite_file("sqlite:///:memory:") is None
    assert locking.sqlite_file("http://127.0.0.1:5000") is None


OPEN_STORE = textwrap.dedent(
    """
    import sys, time
    import mlflow  # imported before the start, so that the processes meet at the store
    from model_lib.tracking import MlflowTracker
    while time.time() < float(sys.argv[1]):  # every process opens the store at the same moment
        time.sleep(0.005)
    MlflowTracker(pending_file=None).end()
    print("ok", flush=True)
    """
)


@pytest.mark.slow
def test_processes_opening_a_fresh_sqlite_store_at_once_all_end_well(tmp_path):
    # MLflow creates and migrates a new sqlite store's tables on first open: two at once leave it
    # half-migrated (alembic: "expected to match one row when updating ..."), and it stays broken.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    start = str(time.time() + 6)  # after every interpreter has imported mlflow
    command = [sys.executable, "-c", OPEN_STORE, start]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    processes = [subprocess.Popen(command, env=env, text=True, **pipes) for _ in range(3)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out == "ok\n", err[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "model-lib"]
    assert len(client.search_runs([experiment.experiment_id])) == 3
