"""Supervision of a training job's processes: start them as one process group, pass signals on, wait for all.

SageMaker stops a job with SIGTERM to the container. The toolkit's ``train`` has no handler and dies
at once, while the training script it started catches the signal and saves its state: a job has
ended only when every process of its group has exited. The image's PID-1 helper
(docker/job_init.py) and local process mode (:mod:`model_lib.sagemaker.local`) wait the same way.

This module imports only the standard library: the container's init imports it before anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

# Seconds a job may take to stop after a forwarded SIGTERM before it is killed.
STOP_GRACE_SECONDS = 60.0
DEFAULT_JOB_NAME = "model-lib-local"


def start_toolkit(
    base_dir: Path, extra_env: Mapping[str, str] | None = None, job_name: str = DEFAULT_JOB_NAME
) -> subprocess.Popen[bytes]:
    """Start the toolkit's ``train`` with SAGEMAKER_BASE_DIR=``base_dir`` as the leader of a new
    process group (the job's processes, as a container holds them); return the process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        {
            "SAGEMAKER_BASE_DIR": str(base_dir.resolve()),
            "TRAINING_JOB_NAME": job_name,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    command = [sys.executable, "-c", "from sagemaker_training.cli.train import main; main()"]
    return subprocess.Popen(command, env=env, cwd=base_dir, start_new_session=True)


def run_toolkit(
    base_dir: Path, extra_env: Mapping[str, str] | None = None, timeout: float | None = None, job_name: str = DEFAULT_JOB_NAME
) -> int:
    """Run the toolkit's ``train`` on ``base_dir`` to its end; return its exit code (see :func:`wait_for_job`).

    Raises:
        subprocess.TimeoutExpired: if the job runs longer than ``timeout`` (its processes are killed).
    """
    return wait_for_job(start_toolkit(base_dir, extra_env, job_name), timeout)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a process of another user reused the id
        return True
    return _member_running(pgid)


def _member_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running, not only exited and waiting to be reaped.

    The toolkit's ``train`` dies at once on SIGTERM, so the training script is an orphan when it
    exits, and its parent is then PID 1. tini in the image reaps it at once; the PID 1 of a desktop
    or CI machine may take seconds (measured: 2 s here), and a zombie still answers ``killpg(pgid, 0)``.
    Where there is no /proc, that answer is all there is.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of the group ``pgid`` (none left: nothing happens)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def wait_for_job(process: subprocess.Popen[bytes], timeout: float | None = None, grace: float = STOP_GRACE_SECONDS) -> int:
    """Wait for a job started as a process group leader, passing SIGTERM and SIGINT on to all of its
    processes, as SageMaker (and ``tini -g`` in the image) does; return the leader's exit code
    (128 + N when signal N ended it).

    The wait lasts until every process of the job has exited, at most ``grace`` seconds after a
    forwarded signal; then the rest are killed (SIGKILL), as SageMaker does after its stop timeout.

    Raises:
        subprocess.TimeoutExpired: if the job runs longer than ``timeout`` (its processes are killed).
    """
    return wait_for_jobs([process], timeout, grace)[0]


def wait_for_jobs(
    processes: list[subprocess.Popen[bytes]], timeout: float | None = None, grace: float = STOP_GRACE_SECONDS
) -> list[int]:
    """Wait for the toolkits of one job's hosts as :func:`wait_for_job` waits for one (signals go to
    every host's processes); return their exit codes in the same order.

    Raises:
        subprocess.TimeoutExpired: if the job runs longer than ``timeout`` (its processes are killed).
    """
    forwarded: list[float] = []

    def forward(signum: int, frame: types.FrameType | None) -> None:
        logger.warning("%s: passing it on to the job's processes", signal.Signals(signum).name)
        forwarded.append(time.monotonic())
        for process in processes:
            signal_group(process.pid, signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while any(p.poll() is None or _group_alive(p.pid) for p in processes):
            now = time.monotonic()
            if (deadline is not None and now > deadline) or (forwarded and now > forwarded[0] + grace):
                for process in processes:
                    signal_group(process.pid, signal.SIGKILL)
                    process.wait()
                if deadline is not None and now > deadline:
                    raise subprocess.TimeoutExpired(processes[0].args, timeout or 0)
                break
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return [128 - p.returncode if p.returncode < 0 else p.returncode for p in processes]


def job_exit_code(codes: list[int]) -> int:
    """Return a multi-host job's exit code: 0 when every host succeeded, else the first host's
    failure (the coordinator's), else the first failing host's, as SageMaker fails a job when any
    host fails."""
    return next((code for code in codes if code != 0), 0)
