"""Artifact uploads to MLflow: a bound scaled to the size of what is uploaded, and a check that
what the server holds afterwards is whole.

MLflow bounds every HTTP call with one setting, ``MLFLOW_HTTP_REQUEST_TIMEOUT``, read from the
environment on each request (:data:`~model_lib.tracking.mlflow_sink.HTTP_LIMITS` sets it to seconds,
for small calls). It is a socket timeout: while bytes move, an upload is not cut, but the answer to
an upload comes only once the server (or a proxy that buffers request bodies) holds the whole file,
which over a slow link takes longer than a small call ever should. So around an upload the timeout is
``base + largest file / minimum rate`` (:func:`upload_timeout`), or MLflow's own
``MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT`` where the user set it (MLflow itself reads that one only
for its Azure and GCS stores, not for a server that proxies artifacts).
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

UPLOAD_RATE_ENV = "MODEL_LIB_MLFLOW_UPLOAD_MB_PER_SECOND"
# The slowest link an upload is given time for: below it, a stalled upload is told apart from a slow one.
DEFAULT_UPLOAD_MB_PER_SECOND = 1.0

_environment = threading.Lock()  # one upload at a time sets the process-wide variable


class IncompleteUpload(Exception):
    """The server holds an uploaded file with another size than the local file (an outage: sent again)."""


def upload_timeout(size: int, base_seconds: float, bytes_per_second: float) -> int:
    """Return the whole seconds an upload of a ``size``-byte file may wait for an answer:
    ``base_seconds + size / bytes_per_second``, rounded up (MLflow reads its timeout as an integer)."""
    return max(1, math.ceil(base_seconds + max(0, size) / bytes_per_second))


def upload_rate() -> float:
    """Return the minimum upload rate in bytes per second (MODEL_LIB_MLFLOW_UPLOAD_MB_PER_SECOND, in MB/s).

    Raises:
        ConfigError: if the variable is set to anything but a number > 0.
    """
    from model_lib.errors import ConfigError

    raw = os.environ.get(UPLOAD_RATE_ENV, "").strip()
    if not raw:
        return DEFAULT_UPLOAD_MB_PER_SECOND * 1e6
    try:
        rate = float(raw)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"{UPLOAD_RATE_ENV}: expected a number of MB per second > 0, got {raw!r}")
    return rate * 1e6


def timeout_for(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Return the timeout for uploading ``paths`` (files, or folders of them) one file per request:
    MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT if set, else :func:`upload_timeout` of the largest file with
    the current MLFLOW_HTTP_REQUEST_TIMEOUT (MLflow's default where unset) as base.

    Raises:
        ConfigError: if MODEL_LIB_MLFLOW_UPLOAD_MB_PER_SECOND is not a number > 0.
        MlflowException: if one of MLflow's variables is not an integer (as MLflow itself raises).
    """
    from mlflow.environment_variables import MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT, MLFLOW_HTTP_REQUEST_TIMEOUT

    fixed = MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT.get()
    if fixed is not None:
        return max(1, int(fixed))
    largest = max((size for _, size in local_files(paths)), default=0)
    return upload_timeout(largest, MLFLOW_HTTP_REQUEST_TIMEOUT.get(), upload_rate())


def local_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, int]]:
    """Return (path relative to its argument, as MLflow names artifacts, and size) of each file in
    ``paths``: a file is its own name, a folder gives each file under it."""
    found = []
    for given in map(Path, paths):
        if given.is_file():
            found.append((given.name, given.stat().st_size))
        elif given.is_dir():
            files = (p for p in sorted(given.rglob("*")) if p.is_file())
            found += [(p.relative_to(given).as_posix(), p.stat().st_size) for p in files]
    return found


@contextlib.contextmanager
def upload_bound(paths: Iterable[str | os.PathLike[str]]) -> Iterator[int]:
    """Set MLflow's request timeout to :func:`timeout_for` ``paths`` while the context is open (for
    this process: MLflow has no per-call setting; another thread's calls meanwhile get it too); yield it."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    name = MLFLOW_HTTP_REQUEST_TIMEOUT.name
    seconds = timeout_for(paths)
    with _environment:
        before = os.environ.get(name)
        os.environ[name] = str(seconds)
        try:
            yield seconds
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def check_whole(expected: Iterable[tuple[str, int]], list_remote: Callable[[str | None], Any], where: str) -> None:
    """Check that the server lists each (relative path, size) of ``expected`` with that size;
    ``list_remote(folder)`` lists a folder (None: the top) as MLflow's ``FileInfo`` entries.

    Raises:
        IncompleteUpload: naming ``where`` and the first file missing or of another size (a server
            that gives no sizes is taken at its word).
    """
    listed: dict[str | None, dict[str, Any]] = {}
    for name, size in expected:
        folder = posixpath.dirname(name) or None
        if folder not in listed:
            listed[folder] = {posixpath.basename(info.path): info.file_size for info in list_remote(folder)}
        remote = listed[folder].get(posixpath.basename(name), -1)
        if remote is not None and remote != size:
            got = "nothing" if remote == -1 else f"{remote} bytes"
            raise IncompleteUpload(f"{where}: {name}: the server holds {got}, the local file is {size} bytes")
