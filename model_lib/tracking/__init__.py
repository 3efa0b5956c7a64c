"""The tracking side: one run per training, resumable by id, with params, per-epoch metrics, test
metrics, figures, the raw-string model and lineage tags. Nothing else in model_lib imports mlflow
(but :mod:`model_lib.mlflow_model`, the logged model's own code, which MLflow runs when it loads).

The package follows MLflow's own ``async_logging`` shape:

- :mod:`~model_lib.tracking.records`: one typed record per kind of call (the pending file's format);
- :mod:`~model_lib.tracking.queue`: the records not sent yet, persisted to the pending file, sent in
  order through a sink it is given, with back-off, and records rejected for good dropped;
- :mod:`~model_lib.tracking.tracker`: :class:`Tracker` (calls -> records) and :class:`NullTracker`;
- :mod:`~model_lib.tracking.mlflow_sink`: the MLflow backend (:class:`MlflowTracker`);
- :mod:`~model_lib.tracking.logged_model`: the pyfunc packaging of the model and the registry;
- :mod:`~model_lib.tracking.datasets`: the run's inputs as MLflow datasets (digest, source, rows);
- :mod:`~model_lib.tracking.lineage`, :mod:`~model_lib.tracking.credentials`,
  :mod:`~model_lib.tracking.uris`, :mod:`~model_lib.tracking.run_reference`.

A second backend is one new module with a sink (and its Tracker) plus one line in :func:`open_tracker`.
``MODEL_LIB_MLFLOW_TAGS`` (a JSON object) adds tags set at launch, e.g. by SageMaker jobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from model_lib.tracking.credentials import SECRET_ENV, load_secret_credentials
from model_lib.tracking.lineage import MODEL_MD5_TAG, TAGS_ENV, file_md5, git_state, lineage_tags
from model_lib.tracking.mlflow_sink import MlflowTracker
from model_lib.tracking.queue import PENDING_FILE
from model_lib.tracking.run_reference import read_run_reference, write_run_reference
from model_lib.tracking.tracker import DEFAULT_WAIT_SECONDS, WAIT_ENV, NullTracker, Tracker
from model_lib.tracking.uris import (
    KNOWN_SCHEMES,
    MODEL_NAME,
    REGISTER_MODEL_ENV,
    check_model_name,
    check_tracking_uri,
    public_uri,
)

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "KNOWN_SCHEMES",
    "MODEL_MD5_TAG",
    "MODEL_NAME",
    "PENDING_FILE",
    "REGISTER_MODEL_ENV",
    "SECRET_ENV",
    "TAGS_ENV",
    "WAIT_ENV",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "check_model_name",
    "check_tracking_uri",
    "file_md5",
    "git_state",
    "lineage_tags",
    "load_secret_credentials",
    "open_tracker",
    "public_uri",
    "read_run_reference",
    "write_run_reference",
]


def open_tracker(
    *,
    run_id: str | None = None,
    pending_file: str | os.PathLike[str] | None = None,
    on_run_id: Callable[[str], None] | None = None,
) -> Tracker:
    """Return the tracker of this process's tracking backend (MLflow), opening run ``run_id`` (None:
    a new run once the server answers), its records kept in ``pending_file``.

    Raises:
        ConfigError: as :class:`MlflowTracker` does (a URI that cannot work, a refusal).
    """
    return MlflowTracker(run_id=run_id, pending_file=pending_file, on_run_id=on_run_id)
