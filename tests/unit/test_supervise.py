"""How long a job lasts, with real processes: until every process of its group has exited, and no
longer, even where the parent a finished process was handed to is slow to reap it."""

import ctypes
import os
import subprocess
import sys
import time

import pytest

from model_lib.sagemaker.supervise import wait_for_job

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")

PR_SET_CHILD_SUBREAPER = 36


def adopting_orphans(on: bool) -> None:
    """Make this process the parent of its descendants' orphans (as PID 1 is), which it never reaps
    unless it waits for them: an orphan that exits stays a zombie of its group."""
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def job(script: str) -> subprocess.Popen:
    """A job's leader that starts ``script`` in its group and leaves at once, as the toolkit's
    ``train`` does on SIGTERM; the leader prints the orphan's PID."""
    return subprocess.Popen(["/bin/sh", "-c", f"{script} & echo $!"], start_new_session=True, stdout=subprocess.PIPE, text=True)


def test_a_job_lasts_until_its_orphaned_process_exits():
    started = time.monotonic()
    assert wait_for_job(job("sleep 1.5")) == 0
    assert time.monotonic() - started >= 1.5


def test_a_job_whose_last_process_exited_has_ended_though_nobody_reaped_it_yet():
    adopting_orphans(True)
    try:
        leader = job("sleep 0.3")
        orphan = int(leader.stdout.readline())
        started = time.monotonic()
        assert wait_for_job(leader, timeout=20) == 0
        waited = time.monotonic() - started
        assert os.waitpid(orphan, os.WNOHANG)[0] == orphan  # it was a zombie, ours to reap, until now
    finally:
        adopting_orphans(False)
    assert waited < 5
