"""One process at a time in a folder that must not be shared: a training's checkpoint folder, and
the first creation of a local MLflow store.

The lock is ``fcntl.flock`` on a file. The kernel releases it when the holding process ends, however
it ends (SIGKILL included), so a killed run never leaves a stale lock and nothing has to be cleaned
up. The file keeps its last holder's pid, host and start time, for the message another process gets;
it is never deleted (deleting a lock file lets two processes each lock a file of their own).

A process that already holds a lock may take it again (nested doors: the run lifecycle, then the
training loop inside it); it is released when the outermost holder lets go. The lock keeps other
processes out, not other threads of the holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from model_lib.errors import FolderLockError

TRAINING_LOCK = "training.lock"  # in the checkpoint folder: one training of that folder at a time
POLL_SECONDS = 0.2


@dataclasses.dataclass
class _Held:
    fd: int
    count: int


_held: dict[tuple[int, int], _Held] = {}  # by (device, inode) of the lock file
_guard = threading.Lock()


def _open(path: Path) -> int:
    """Return a descriptor of the lock file ``path`` (created, with its folder, if missing).

    Raises:
        FolderLockError: if the folder cannot hold the lock file (read-only, not a folder).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise FolderLockError(f"{path}: expected a writable folder to hold this lock, got {exc.strerror}") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_holder(fd: int, purpose: str) -> None:
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "purpose": purpose}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def holder(path: Path) -> str:
    """Return who holds (or last held) the lock file ``path``, in words: pid, host, since when, what for."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {int(found['pid'])} on host {found['host']}, {found['purpose']} since {found['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


@contextlib.contextmanager
def hold(path: str | os.PathLike[str], purpose: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs; ``purpose`` (e.g. "training") is shown to
    whoever finds it held. ``wait`` is how many seconds to wait for another holder to let go (0:
    refuse at once).

    Raises:
        FolderLockError: if another process still holds it after ``wait`` seconds (the message names
            the file and the holder), or the lock file cannot be created.
    """
    path = Path(path)
    fd = _open(path)
    key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    with _guard:
        mine = _held.get(key)
        if mine is not None:  # this process holds it already (a nested door)
            os.close(fd)
            mine.count += 1
    if mine is None:
        mine = _acquire(path, fd, purpose, wait)
        with _guard:
            _held[key] = mine
    try:
        yield
    finally:
        with _guard:
            mine.count -= 1
            if mine.count == 0:
                del _held[key]
                os.close(mine.fd)  # closing the last descriptor releases the lock


def _acquire(path: Path, fd: int, purpose: str, wait: float) -> _Held:
    deadline = time.monotonic() + wait
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            os.close(fd)
            waited = f" after waiting {wait:g} s" if wait > 0 else ""
            raise FolderLockError(
                f"{path}: expected no other process using {path.parent}, got {holder(path)} (still running{waited}); "
                "wait for it to end, or stop it"
            )
        time.sleep(POLL_SECONDS)
    _write_holder(fd, purpose)
    return _Held(fd, 1)


def hold_training(
    folder: str | os.PathLike[str] | None, wait: float = 0.0, purpose: str = "training"
) -> contextlib.AbstractContextManager[None]:
    """Return a context holding the checkpoint ``folder`` (:data:`TRAINING_LOCK` in it) for one
    training, or for another process that writes there (``purpose``: what it does, shown to whoever
    finds it held); a no-op for None (no checkpoints). ``wait`` as in :func:`hold`.

    Raises:
        FolderLockError: when entered while another process holds ``folder`` (see :func:`hold`).
    """
    if folder is None:
        return contextlib.nullcontext()
    return hold(Path(folder) / TRAINING_LOCK, purpose, wait=wait)


def sqlite_file(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:`` tracking URI, or None for any other URI (or an
    in-memory database)."""
    if not uri.startswith("sqlite:///"):
        return None
    name = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def store_creation(uri: str, wait: float = 120.0) -> contextlib.AbstractContextManager[None]:
    """Return a context that serialises opening a local sqlite store (``<file>.lock`` beside it), so
    that two first runs do not both create and migrate its tables (alembic leaves it half-migrated);
    a no-op for any other URI, or where the folder cannot hold the lock (the store then reports).
    """
    database = sqlite_file(uri)
    if database is None:
        return contextlib.nullcontext()
    lock = database.with_name(database.name + ".lock")
    try:
        os.close(_open(lock))
    except FolderLockError:
        return contextlib.nullcontext()
    return hold(lock, "creation of the MLflow store", wait=wait)
