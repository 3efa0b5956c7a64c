"""Real file-system faults for a child process, without root where the system allows it: a folder
that cannot be written, a disk that fills up, a file-size limit. Each returns the command prefix
(or the preexec function) that puts the child under that fault, or calls ``pytest.skip`` naming why
it cannot here."""

from __future__ import annotations

import functools
import os
import resource
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@functools.cache
def _can_unshare() -> str | None:
    """Return None if `unshare -rm` may mount here (a user and mount namespace), else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rm refused: {probe.stderr.strip()[:200]}"


def in_mount_namespace(mounts: str, command: list[str]) -> list[str]:
    """Return ``command`` run after the shell lines ``mounts`` in a private user and mount namespace
    (nothing outside sees the mounts); skip the test where namespaces are not allowed."""
    why = _can_unshare()
    if why is not None:
        pytest.skip(why)
    return ["unshare", "-rm", "sh", "-ec", f"{mounts}\nexec {shlex.join(command)}"]


def read_only(folder: Path, command: list[str]) -> list[str]:
    """Return ``command`` run with ``folder`` not writable: a read-only bind mount (EROFS), else, for
    a user other than root, mode 0555 (EACCES); skip where neither can be done."""
    if _can_unshare() is None:
        where = shlex.quote(str(folder))
        return in_mount_namespace(f"mount --bind {where} {where}\nmount -o remount,bind,ro {where}", command)
    if os.geteuid() == 0:
        pytest.skip("root writes into a mode-0555 folder and no mount namespace is allowed here")
    folder.chmod(0o555)
    return command


def tiny_disk(folder: Path, kilobytes: int, command: list[str]) -> list[str]:
    """Return ``command`` run with a ``kilobytes`` tmpfs mounted on ``folder``: a real ENOSPC."""
    where = shlex.quote(str(folder))
    return in_mount_namespace(f"mount -t tmpfs -o size={kilobytes}k tmpfs {where}", command)


def file_size_limit(size: int) -> Callable[[], None]:
    """Return a preexec function for a child whose files cannot grow past ``size`` bytes (RLIMIT_FSIZE:
    a write past it fails with EFBIG, as Python ignores SIGXFSZ); no privilege needed."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit
