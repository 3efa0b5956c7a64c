"""What the run lifecycle and the training loop call: a :class:`Tracker` turns each call into a
record and queues it (sending through whatever sink it was given), and a :class:`NullTracker` with
the same methods does nothing (tracking off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_lib.tracking import records
from model_lib.tracking.queue import PendingQueue, Sink

if TYPE_CHECKING:
    from model_lib.tracking.datasets import DatasetDescription

logger = logging.getLogger(__name__)

WAIT_ENV = "MODEL_LIB_MLFLOW_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 60.0
# A stopped job has seconds before it is killed: it does not wait for the server.
STOPPED_WAIT_SECONDS = 5.0


def wait_seconds() -> float:
    """Return how long a run's end waits for a server that does not answer (MODEL_LIB_MLFLOW_WAIT_SECONDS).

    Raises:
        ConfigError: if the variable is set to anything but a number of seconds >= 0.
    """
    from model_lib.environ import seconds_from_env

    return seconds_from_env(WAIT_ENV, DEFAULT_WAIT_SECONDS)


def not_uploaded(waiting: Iterable[records.Record]) -> list[str]:
    """Return the local files that the model and artifact records among ``waiting`` upload."""
    files: list[str] = []
    for record in waiting:
        if isinstance(record, records.Model):
            files.append(f"the model {record.path}")
        elif isinstance(record, records.Artifacts):
            files += [path for path in record.paths if Path(path).is_file()]
    return files


class Tracker:
    """Logs one run through ``sink``, and never stops training because of it.

    Every call (params, tags, each epoch's metrics, artifacts, the model, the end) becomes a record
    in a :class:`~model_lib.tracking.queue.PendingQueue` mirrored in ``pending_file`` and is sent in
    order; when the server does not answer, training goes on, and what waits is sent at a later
    call, when the run ends (waiting up to ``MODEL_LIB_MLFLOW_WAIT_SECONDS``, default 60 s), at the
    next restart, or by ``model-lib mlflow-sync``.

    ``run_id`` reopens a run (another stage, a restarted job); without it the run is created in
    ``experiment`` once the server answers. With ``open_run=False`` it only sends what
    ``pending_file`` holds. As a context manager it ends the run FINISHED, KILLED when training was
    stopped by a signal (reopened when training resumes), or FAILED on any other exception.

    Raises:
        ConfigError: if the server refuses this process before training starts, or
            MODEL_LIB_MLFLOW_WAIT_SECONDS is not a number of seconds (checked here, not at the end),
            or MODEL_LIB_SYSTEM_METRICS / MODEL_LIB_SYSTEM_METRICS_SECONDS is wrong.
        OutputError: if the pending file's folder cannot be written; or what ``on_run_id`` raised
            (the run it was called for is ended FAILED first).
    """

    def __init__(
        self,
        sink: Sink,
        experiment: str,
        run_id: str | None = None,
        *,
        pending_file: str | os.PathLike[str] | None = None,
        header: Mapping[str, str] | None = None,
        target: str = "the tracking server",
        on_run_id: Callable[[str], None] | None = None,
        open_run: bool = True,
    ) -> None:
        from model_lib.tracking.system_metrics import SystemMetricsSettings, settings

        self._wait = wait_seconds()  # a bad value fails before training, not after it
        self._system_metrics = settings() if open_run else SystemMetricsSettings(enabled=False)
        path = Path(pending_file) if pending_file is not None else None
        self._queue = PendingQueue(sink, path, run_id=run_id, header=header, target=target, on_run_id=on_run_id)
        self.reopened = run_id is not None
        if open_run:  # else only send what is pending (model-lib mlflow-sync)
            if self._queue.run_id is not None:
                self._queue.append(records.Status("RUNNING"))
            elif not any(isinstance(record, records.Start) for record in self._queue.records):
                self._queue.append(records.Start(experiment))
        try:
            self.flush(refused_is_fatal=True)
        except Exception:
            if self.run_id is not None and not self.reopened:  # created, then the caller's on_run_id failed
                self.end("FAILED", wait=STOPPED_WAIT_SECONDS)
            raise

    @property
    def run_id(self) -> str | None:
        """Return the run's id, or None while the server has not created it."""
        return self._queue.run_id

    @property
    def pending(self) -> list[str]:
        """Return what is still waiting to be sent, one word per record (e.g. ["epoch", "model"])."""
        return self._queue.pending

    def flush(self, wait: float = 0.0, *, refused_is_fatal: bool = False) -> bool:
        """Send the queued records in order; return whether none is left (see :meth:`PendingQueue.flush`).

        Raises:
            ConfigError: with ``refused_is_fatal``, if the server refused this process.
        """
        return self._queue.flush(wait, refused_is_fatal=refused_is_fatal)

    def _add(self, record: records.Record) -> None:
        self._queue.append(record)
        self.flush()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from model_lib.errors import TrainingInterrupted

        if exc_type is None:
            self.end("FINISHED")
        else:
            stopped = isinstance(exc, (TrainingInterrupted, KeyboardInterrupt))
            self.end("KILLED" if stopped else "FAILED", wait=STOPPED_WAIT_SECONDS)

    def end(self, status: str = "FINISHED", wait: float | None = None) -> bool:
        """End the run with ``status``, waiting up to ``wait`` seconds (default: MODEL_LIB_MLFLOW_WAIT_SECONDS)
        for a server that does not answer; return whether everything was sent.

        What could not be sent stays in the pending file, and one warning names it.
        """
        self._queue.append(records.End(status))
        if wait is None:
            wait = self._wait
        if self.flush(wait=wait):
            return True
        counts = {kind: self.pending.count(kind) for kind in dict.fromkeys(self.pending)}
        path = self._queue.path
        logger.warning(
            "%s did not answer: not sent yet: %s; kept in %s; send them with `model-lib mlflow-sync --checkpoints %s`",
            self._queue.target,
            ", ".join(f"{n} {k}" if n > 1 else k for k, n in counts.items()),
            path or "memory (no pending file)",
            path.parent if path else "DIR",
        )
        uploads = not_uploaded(self._queue.records)
        if uploads:
            logger.warning(
                "%s does not hold these files yet (they go with the records above): %s", self._queue.target, ", ".join(uploads)
            )
        return False

    def count_restart(self) -> None:
        """Add one to the run's restart count tag (``model_lib.restarts``)."""
        self._add(records.Restart())

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (None becomes 'null'); MLflow refuses a changed value of a logged param."""
        self._add(records.Params({k: "null" if v is None else v for k, v in params.items()}))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (lineage, source)."""
        self._add(records.Tags(dict(tags)))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics with step = epoch (0-based), once even across restarts."""
        self._add(records.Epoch(epoch, {k: float(v) for k, v in metrics.items()}))

    def log_history(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log the epochs of ``history`` that the run does not hold yet (after a restart: an epoch
        whose checkpoint was saved but whose metrics were not sent before the process died)."""
        for row in history:
            self.log_epoch(int(row["epoch"]) - 1, {k: float(v) for k, v in row.items() if k != "epoch"})

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Log the numeric entries of ``metrics`` (nested lists and nulls are skipped)."""
        numeric = {
            f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._add(records.Metrics(numeric))

    def log_artifacts(self, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> None:
        """Upload the files that exist among ``paths`` (they are read when sent)."""
        self._add(records.Artifacts([str(Path(p).resolve()) for p in paths], artifact_path))

    def log_model(self, model: Any, path: str | os.PathLike[str], examples: Sequence[str], step: int = 0) -> None:
        """Log the raw-string model saved at ``path`` (``model``: the same model, already loaded, or
        None); the run's metrics at ``step`` (the best epoch, 0-based) become the model's."""
        self._add(records.Model(str(Path(path).resolve()), list(examples), int(step)))

    def log_datasets(self, datasets: Iterable[DatasetDescription]) -> None:
        """Log each of the run's inputs as an MLflow dataset (name, digest, source, rows, context)."""
        for dataset in datasets:
            self._queue.append(records.Dataset(**dataclasses.asdict(dataset)))
        self.flush()

    def register_model(self, name: str) -> None:
        """Register the run's logged model as a new version of registered model ``name``, tagged
        with the run's lineage (git commit, data MD5s); once per run, even across restarts."""
        self._add(records.Register(name))

    def monitor_system(self, node: str | None = None) -> contextlib.AbstractContextManager[Any]:
        """Return a context that samples this host's system metrics into the run while it is open
        (``system/...``; ``system/<node>/...`` with ``node``), in a thread with a queue of its own
        (see :mod:`~model_lib.tracking.system_metrics`; what it could not send joins this queue at
        the end); with MODEL_LIB_SYSTEM_METRICS=false, one that does nothing."""
        from model_lib.tracking.system_metrics import SystemMonitor

        if not self._system_metrics.enabled:
            return contextlib.nullcontext()
        return SystemMonitor(
            self._queue.sink, lambda: self.run_id, node=node, interval=self._system_metrics.interval,
            target=self._queue.target, hand_over=self._keep,
        )  # fmt: skip

    def _keep(self, left: Sequence[records.Record]) -> None:
        """Queue ``left`` (system metrics not sent by their own thread) to go with the run's end."""
        self._queue.records.extend(left)
        self._queue.save()


class NullTracker:
    """A tracker for tracking off: the same methods as :class:`Tracker`, and none does anything."""

    run_id: str | None = None
    reopened = False

    @property
    def pending(self) -> list[str]:
        """Return []: nothing waits."""
        return []

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    def flush(self, wait: float = 0.0, *, refused_is_fatal: bool = False) -> bool:
        """Return True: nothing waits."""
        return True

    def end(self, status: str = "FINISHED", wait: float | None = None) -> bool:
        """Return True: nothing waits."""
        return True

    def count_restart(self) -> None:
        """Do nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Do nothing."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Do nothing."""

    def log_history(self, history: Sequence[Mapping[str, float]]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Do nothing."""

    def log_artifacts(self, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> None:
        """Do nothing."""

    def log_model(self, model: Any, path: str | os.PathLike[str], examples: Sequence[str], step: int = 0) -> None:
        """Do nothing."""

    def register_model(self, name: str) -> None:
        """Do nothing."""

    def log_datasets(self, datasets: Iterable[DatasetDescription]) -> None:
        """Do nothing."""

    def monitor_system(self, node: str | None = None) -> contextlib.AbstractContextManager[Any]:
        """Return a context that does nothing."""
        return contextlib.nullcontext()
