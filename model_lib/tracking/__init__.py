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

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from model_lib.tracking.credentials import SECRET_ENV, load_secret_credentials
from model_lib.tracking.lineage import MODEL_MD5_TAG, TAGS_ENV, file_md5, git_state, lineage_tags
from model_lib.tracking.mlflow_sink import MlflowTracker
from model_lib.tracking.queue import PENDING_FILE
from model_lib.tracking.run_reference import read_run_reference, write_run_reference
from model_lib.tracking.system_metrics import settings as system_metrics_settings
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
    "host_monitor",
    "lineage_tags",
    "load_secret_credentials",
    "open_tracker",
    "public_uri",
    "read_run_reference",
    "system_metrics_settings",
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


def host_monitor(run_id: str | None, *, node: str) -> contextlib.AbstractContextManager[Any]:
    """Return a context that samples this host's system metrics into run ``run_id`` of the tracking
    backend as ``system/<node>/...`` while it is open (a worker host of a multi-host job, which opens
    no run of its own); one that does nothing with no run or MODEL_LIB_SYSTEM_METRICS=false.

    Raises:
        ConfigError: if MODEL_LIB_SYSTEM_METRICS or MODEL_LIB_SYSTEM_METRICS_SECONDS is wrong (a
            monitor that cannot be made is logged, not raised).
    """
    from model_lib.tracking.mlflow_sink import system_monitor

    chosen = system_metrics_settings()
    if run_id is None or not chosen.enabled:
        return contextlib.nullcontext()
    try:
        return system_monitor(run_id, node=node, interval=chosen.interval)
    except Exception as exc:  # tracking never stops training: this host's metrics are left out
        logging.getLogger(__name__).warning("system metrics of %s are not recorded: %s", node, exc)
        return contextlib.nullcontext()
