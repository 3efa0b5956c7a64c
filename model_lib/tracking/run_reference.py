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
    """Return the run id written by :func:`write_run_reference`, or None if there is no file."""
    if not Path(path).is_file():
        return None
    run_id = json.loads(Path(path).read_text(encoding="utf-8")).get("run_id")
    return str(run_id) if run_id else None
