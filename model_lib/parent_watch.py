"""A stage command that outlives its launcher stops as if told to: `dvc repro` killed with SIGTERM
(its own process, not its group) dies at once (DVC installs no SIGTERM handler) and leaves its stage
command running, reparented; nobody would record what it writes, and the next `dvc repro` would
start a second training beside it. Under DVC the training therefore watches its parent, and once
the parent is gone sends itself SIGTERM: the training loop saves its state and stops, and the next
`dvc repro` resumes there (the checkpoint folder's lock keeps it from starting beside a trainer
still saving).

Only under DVC: a training started by hand (``nohup model-lib train &``) must survive its shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it in the environment of every stage command it runs
POLL_SECONDS = 0.5


# DVC runs a stage as `$SHELL -c cmd` (/bin/sh without SHELL). bash execs a lone command, but dash
# (Debian's /bin/sh) stays between: then it is the shell's parent, DVC, whose going must be seen.
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish", "ash", "busybox"})


def _parent_of(pid: int) -> tuple[int, str] | None:
    """Return (parent pid, command name) of ``pid`` from /proc, or None once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    name, _, rest = stat[stat.index("(") + 1 :].rpartition(")")
    return int(rest.split()[1]), name


def _launchers(pid: int) -> dict[int, int]:
    """Return {pid: its parent} for this process's parent and, through shells, the process that ran them."""
    chain: dict[int, int] = {}
    found = _parent_of(pid)
    while found is not None and found[0] > 1:
        chain[pid] = found[0]
        pid = found[0]
        found = _parent_of(pid)
        if found is None or found[1] not in SHELLS:  # not a shell: the launcher itself
            break
    return chain


def _gone(chain: dict[int, int]) -> int | None:
    """Return the first pid of ``chain`` whose parent is no longer the one recorded (it died), or None."""
    for pid, parent in chain.items():
        now = _parent_of(pid)
        if now is None or now[0] != parent:
            return parent
    return None


def _watch(chain: dict[int, int], stop: threading.Event, poll: float) -> None:
    while not stop.wait(poll):
        gone = _gone(chain)
        if gone is not None:
            logger.warning("the process that ran this stage (pid %d) is gone: stopping as on SIGTERM", gone)
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextlib.contextmanager
def stopping_when_parent_goes(poll: float = POLL_SECONDS) -> Iterator[bool]:
    """While the block runs as a DVC stage's command, send this process SIGTERM once its parent
    process is gone, or the process that ran the shell between them (a daemon thread checks /proc
    every ``poll`` seconds); yield whether it watches."""
    if DVC_STAGE_ENV not in os.environ:
        yield False
        return
    stop = threading.Event()
    chain = _launchers(os.getpid())
    watcher = threading.Thread(target=_watch, args=(chain, stop, poll), name="parent-watch", daemon=True)
    watcher.start()
    try:
        yield True
    finally:
        stop.set()
