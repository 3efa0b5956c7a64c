"""The run-reference file: the MLflow run id one stage leaves for the next (DVC's evaluate adds to
the run train opened)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from model_lib._io import write_json


def write_run_reference(path: str | os.PathLike[str], run_id: str | None) -> None:
    """Write the run id (null while the server has not answered), so the next stage adds to the same run.

    The file is committed to git, so it holds no tracking URI: a local store's URI is a machine's
    path, and a server's may carry credentials.
    """
    write_json(path, {"run_id": run_id})


def read_run_reference(path: str | os.PathLike[str]) -> str | None:
    """Return the run id written by :func:`write_run_reference`, or None if there is no file.

    Raises:
        DataError: naming the file, if it is not a JSON object whose run_id is a string or null.
    """
    from model_lib.errors import DataError

    if not Path(path).is_file():
        return None
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    try:
        saved = json.loads(text)
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise DataError(f"{path}: expected a JSON object with a run_id, got {text[:80]!r}")
    run_id = saved.get("run_id")
    if not isinstance(run_id, (str, type(None))):
        raise DataError(f"{path}: run_id: expected a string or null, got {run_id!r}")
    return run_id or None
