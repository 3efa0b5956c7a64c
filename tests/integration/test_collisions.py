"""Runs that collide or are orphaned, with real processes: two `model-lib train` of one folder at
once (one refuses, naming the other), and `dvc repro` killed with SIGTERM to its own process only
(its `model-lib train` stops having saved, and the next `dvc repro` resumes in the same MLflow run)."""

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from model_lib import checkpoints, locking
from tests.conftest import BIN, TINY_TRAINING, git_copy_of_repo, write_prepared
from tests.integration.test_lifecycle import HPS, env_for, runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_second_train_of_one_folder_is_refused_naming_the_first(tmp_path):
    write_prepared(tmp_path / "data" / "prepared")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {**TINY_TRAINING, "checkpoint_steps": 2}}))
    command = [str(BIN / "model-lib"), "train", "--no-mlflow"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    both = [subprocess.Popen(command, cwd=tmp_path, env=env_for(tmp_path), **pipes) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in both]
    codes = [process.returncode for process in both]
    assert sorted(codes) == [0, 2], outputs
    winner, refusal = both[codes.index(0)], outputs[codes.index(2)][1].strip()
    lock = Path("checkpoints") / locking.TRAINING_LOCK
    assert refusal.startswith(
        f"model-lib train: error: {lock}: expected no other process using checkpoints, got pid {winner.pid} on host "
    )
    assert "\n" not in refusal and ", training since 20" in refusal
    # The survivor ran as a single run does: from epoch 1 to the end, no generation lost or skipped,
    # its checkpoints retired at the end.
    log = outputs[codes.index(0)][1]
    assert "resuming" not in log and "skipped" not in log and "afresh" not in log, log[-3000:]
    history = json.loads((tmp_path / "models" / "history.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert checkpoints.generation_numbers(tmp_path / "checkpoints") == []
    assert not list((tmp_path / "checkpoints").glob(".gen-*"))


def trainer_of(dvc: subprocess.Popen[str]) -> psutil.Process:
    """Return the `model-lib train` process `dvc repro` started, once it has saved a generation."""
    while True:
        assert dvc.poll() is None, dvc.communicate()[0][-3000:]
        found = [p for p in psutil.Process(dvc.pid).children(recursive=True) if "train" in p.cmdline()]
        if found:
            return found[0]
        time.sleep(0.05)


def test_dvc_repro_stopped_by_sigterm_leaves_no_trainer_and_the_next_resumes_in_the_same_run(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    env = git_copy_of_repo(copy, {"train": {**HPS, "checkpoint_steps": 5}})
    write_prepared(copy / "data" / "prepared", count=400, max_length=40)  # 34 steps an epoch
    env["PYTHONUNBUFFERED"] = "1"
    # DVC runs `$SHELL -c cmd`: dash (Debian's /bin/sh, and CI's when SHELL is unset) does not exec the
    # command but stays between dvc and the trainer, the case a watch of the parent alone missed.
    env["SHELL"] = "/bin/sh"
    repro = ["dvc", "repro", "--single-item", "train"]
    dvc = subprocess.Popen(repro, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trainer = trainer_of(dvc)
    try:
        while not checkpoints.generation_numbers(copy / "checkpoints"):  # training has begun
            assert trainer.is_running(), dvc.communicate()[0][-3000:]
            time.sleep(0.05)
        dvc.send_signal(signal.SIGTERM)  # to dvc alone, not its process group
        stopped_at = time.monotonic()
        assert dvc.wait(timeout=30) == -signal.SIGTERM
        gone, _ = psutil.wait_procs([trainer], timeout=30)
        assert gone, "model-lib train still runs after dvc repro was stopped"
        print(f"model-lib train ended {time.monotonic() - stopped_at:.1f} s after dvc repro was stopped")
        output = dvc.stdout.read() if dvc.stdout else ""  # the trainer wrote to dvc's output until it ended
    finally:
        if trainer.is_running():
            trainer.kill()
    assert "is gone: stopping as on SIGTERM" in output, output[-3000:]
    assert "training stopped by SIGTERM: state saved in checkpoints; run again to resume" in output
    (stopped,) = runs(copy)
    assert stopped.info.status == "KILLED"

    again = subprocess.run(repro, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming at epoch" in again.stdout + again.stderr
    (run,) = runs(copy)
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["model_lib.restarts"] == "1"
