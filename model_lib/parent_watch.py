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

logger = logging.getLogger(__name__)

DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it in the environment of every stage command it runs
POLL_SECONDS = 0.5


def _watch(parent: int, stop: threading.Event, poll: float) -> None:
    while not stop.wait(poll):
        if os.getppid() != parent:
            logger.warning("the process that ran this stage (pid %d) is gone: stopping as on SIGTERM", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextlib.contextmanager
def stopping_when_parent_goes(poll: float = POLL_SECONDS) -> Iterator[bool]:
    """While the block runs as a DVC stage's command, send this process SIGTERM once its parent
    process is gone (a daemon thread checks every ``poll`` seconds); yield whether it watches."""
    if DVC_STAGE_ENV not in os.environ:
        yield False
        return
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(os.getppid(), stop, poll), name="parent-watch", daemon=True)
    watcher.start()
    try:
        yield True
    finally:
        stop.set()
