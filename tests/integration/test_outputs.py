"""The files we write, checked with real processes and real faults: the mode a plain open() gets
under two umasks, one line naming the path when the disk refuses a write (and no temporary file
left), outputs that cannot be written refused before any run opens, and a failure that is not
tracking's ending the one run FAILED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests import faults
from tests.conftest import BIN, REPO, TINY_TRAINING, write_prepared

pytestmark = pytest.mark.integration

WRITE_EVERY_KIND = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import numpy as np
    from model_lib import _io, checkpoints, evaluation, prepared
    from model_lib.data import Reviews, write_reviews_jsonl
    from model_lib.tracking import records
    from model_lib.tracking.queue import PendingQueue
    from model_lib.tracking.run_reference import write_run_reference

    modes = {}
    for umask in sys.argv[2:]:
        os.umask(int(umask, 8))
        out = Path(sys.argv[1]) / umask
        _io.write_json(out / "a" / "report.json", {"x": 1})
        _io.write_text(out / "a" / "vocab.txt", "the\\n")
        prepared.save_split(out / "prepared" / "train", np.zeros((4, 3), np.int32), np.array([0, 1, 0, 1]))
        prepared.save_embedding_matrix(out / "prepared" / "embeddings.npy", np.zeros((4, 2), np.float32))
        write_reviews_jsonl(Reviews(["good", "bad"], np.array([1, 0], np.int8)), out / "reviews.jsonl")
        write_run_reference(out / "models" / "mlflow_run.json", "abc")
        checkpoints.save(out / "checkpoints", {"epoch": 1}, {"model": [np.zeros(3)]}, [np.zeros(3)])
        evaluation.write_report(out / "reports", np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.6]),
                                history=[{"epoch": 1, "loss": 0.5, "val_loss": 0.6}])
        queue = PendingQueue(sink=None, path=out / "checkpoints" / "mlflow-pending.json")
        queue.append(records.Start("model-lib"))
        modes[umask] = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in sorted(out.rglob("*"))}
    print(json.dumps(modes))
    """
)
PENDING = "checkpoints/mlflow-pending.json"  # 0600 whatever the umask: see tracking/queue.py


def child(script: str, *args: str, **popen: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", script, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, **popen)  # type: ignore[call-overload]


def test_every_output_gets_the_mode_a_plain_open_gets_under_the_umask(tmp_path):
    result = child(WRITE_EVERY_KIND, str(tmp_path), "022", "002")
    assert result.returncode == 0, result.stderr[-3000:]
    for umask, modes in json.loads(result.stdout.splitlines()[-1]).items():
        written = {"models/mlflow_run.json", "reports/roc.png", "prepared/train/part-00000.npz", "checkpoints/gen-000001"}
        written.add(PENDING)
        assert written <= set(modes)
        folder = tmp_path / umask
        expected = {
            name: 0o600 if name == PENDING else (0o777 if (folder / name).is_dir() else 0o666) & ~int(umask, 8) for name in modes
        }
        assert {k: oct(v) for k, v in modes.items()} == {k: oct(v) for k, v in expected.items()}, umask


WRITE_TOO_MUCH = textwrap.dedent(
    """
    import sys
    from model_lib import _io
    try:
        _io.write_text(sys.argv[1], "x" * 200_000)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
    """
)


def test_a_write_past_the_file_size_limit_names_the_path_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "report.txt"
    result = child(WRITE_TOO_MUCH, str(target), preexec_fn=faults.file_size_limit(50_000))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"OutputError: {target}: expected a writable file, got EFBIG (File too large)"
    assert list(target.parent.iterdir()) == []


def test_a_full_disk_names_the_path_and_leaves_no_temporary_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"{WRITE_TOO_MUCH}\nimport os; print(os.listdir({str(disk)!r}))"
    command = faults.tiny_disk(disk, 64, [sys.executable, "-c", script, str(disk / "report.txt")])
    result = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        f"OutputError: {disk / 'report.txt'}: expected a writable file, got ENOSPC (No space left on device)",
        "[]",  # the full disk, listed before the namespace (and its tmpfs) goes: no temporary file left
    ]


@pytest.fixture
def workdir(tmp_path):
    """A folder laid out like the repo after `prepare` (tiny data), params for a tiny training."""
    write_prepared(tmp_path / "data" / "prepared")
    params = {"train": {**TINY_TRAINING, "epochs": 2}, "evaluate": {"threshold": 0.5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return tmp_path


def env_for(workdir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db", "PYTHONUNBUFFERED": "1", **extra}


def runs(uri: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("model-lib ")]


def test_train_into_a_read_only_models_folder_exits_2_before_a_run_opens(workdir):
    (workdir / "models").mkdir()
    command = faults.read_only(workdir / "models", [str(BIN / "model-lib"), "train"])
    result = subprocess.run(command, cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("model-lib train: error: models: expected a folder to write the model in, got E"), line
    assert "epoch 1/" not in result.stderr
    assert not (workdir / "mlflow.db").exists() or runs(f"sqlite:///{workdir}/mlflow.db") == []


@pytest.mark.slow  # the one test here that trains: the disk fills when the model is saved
def test_a_full_disk_while_saving_the_model_ends_the_one_run_failed_naming_the_file(workdir):
    (workdir / "models").mkdir()
    # 16 KiB: the run reference fits, the model does not; the listing is taken before the tmpfs goes.
    train = f"umask 002; {BIN / 'model-lib'} train -S epochs=1; code=$?; stat -c '%a %n' models/.* models/* > listing.txt"
    train += "; exit $code"
    command = faults.tiny_disk(workdir / "models", 16, ["sh", "-c", train])
    result = subprocess.run(command, cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert error_lines(result.stderr) == [
        "model-lib train: error: models/model.keras: expected a writable file, got ENOSPC (No space left on device)"
    ]
    listing = [line for line in (workdir / "listing.txt").read_text().splitlines() if not line.endswith((".", ".."))]
    assert listing == ["664 models/mlflow_run.json"]  # no temporary file left; the umask's mode
    assert [r.info.status for r in runs(f"sqlite:///{workdir}/mlflow.db")] == ["FAILED"]
    assert "did not take a record" not in result.stderr  # not reported as tracking's


def test_a_run_reference_the_disk_refuses_ends_the_one_run_it_opened_failed(workdir):
    # The run is created, then writing models/mlflow_run.json fails: that is not an MLflow outage to
    # retry (each retry used to create another run, all left RUNNING), and the run ends FAILED.
    (workdir / "models").mkdir()
    fill = "mount -t tmpfs -o size=8k tmpfs models\ndd if=/dev/zero of=models/filler bs=1k count=64 2>/dev/null || true"
    command = faults.in_mount_namespace(fill, [str(BIN / "model-lib"), "train"])
    result = subprocess.run(command, cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert error_lines(result.stderr) == [
        "model-lib train: error: models/mlflow_run.json: expected a writable file, got ENOSPC (No space left on device)"
    ]
    assert [r.info.status for r in runs(f"sqlite:///{workdir}/mlflow.db")] == ["FAILED"]
    assert "did not take a record" not in result.stderr and "epoch 1/" not in result.stderr


def test_mlflow_sync_with_a_pending_folder_that_cannot_be_written_exits_2_before_sending(workdir):
    pending = workdir / "checkpoints" / "mlflow-pending.json"
    pending.parent.mkdir()
    pending.write_text(json.dumps({"run_id": None, "queue": [{"op": "start", "experiment": "model-lib"}]}))
    command = faults.read_only(pending.parent, [str(BIN / "model-lib"), "mlflow-sync", "--wait", "0"])
    result = subprocess.run(command, cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    expected = "model-lib mlflow-sync: error: checkpoints: expected a folder to write the pending tracking records in, got E"
    assert line.startswith(expected), line
    assert runs(f"sqlite:///{workdir}/mlflow.db") == []  # nothing sent: a second sync would have sent it again


def test_a_tracking_store_folder_that_cannot_be_written_is_refused_before_training(workdir):
    store = workdir / "store"
    store.mkdir()
    command = faults.read_only(store, [str(BIN / "model-lib"), "train"])
    env = env_for(workdir, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    expected = f"model-lib train: error: MLFLOW_TRACKING_URI=sqlite:///{store}/mlflow.db: {store}: expected a folder to write"
    assert line.startswith(expected), line
    assert "epoch 1/" not in result.stderr and not (workdir / "models").exists()


def test_a_write_outside_the_atomic_writer_that_the_place_refuses_is_one_line(workdir):
    # The SageMaker base folder is laid out with plain writes: the CLI names the path, exit 2.
    (workdir / "locked").mkdir()
    local = [str(BIN / "model-lib"), "sagemaker-local", "--base-dir", "locked/base", "--source-dir", str(REPO / "entry_point")]
    result = subprocess.run(faults.read_only(workdir / "locked", local), cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("model-lib sagemaker-local: error: locked/base: E"), line
