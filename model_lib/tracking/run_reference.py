"""The run-reference file: the MLflow run id one stage leaves for the next (DVC's evaluate adds to
the run train opened), with the MD5 of the model that run made.

The file is git-ignored and not a DVC output: it names a run in this machine's (or this team's)
store, and every new run rewrites it. The MD5 keeps a stale file from sending a restored model's
scores (`git checkout` + `dvc checkout` of an older model) to the run of the latest training."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from model_lib._io import write_json

logger = logging.getLogger(__name__)


def write_run_reference(path: str | os.PathLike[str], run_id: str | None, model_md5: str | None = None) -> None:
    """Write the run id (null while the server has not answered), so the next stage adds to the same
    run, and the MD5 of the model file it made (None while there is none yet).

    It holds no tracking URI: a local store's URI is a machine's path, and a server's may carry
    credentials.
    """
    write_json(path, {"run_id": run_id, "model_md5": model_md5})


def read_run_reference(path: str | os.PathLike[str], model_md5: str | None = None) -> str | None:
    """Return the run id written by :func:`write_run_reference`, or None if there is no file, or
    when ``model_md5`` (the model about to be scored) is not the MD5 of the model that run made:
    then a warning says so, and the caller opens a run of its own.

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
    made = saved.get("model_md5")
    if run_id and model_md5 and isinstance(made, str) and made != model_md5:
        logger.warning(
            "%s names MLflow run %s, which made another model (MD5 %s, not %s): its scores go to a new run",
            path, run_id, made, model_md5,
        )  # fmt: skip
        return None
    return run_id or None
