"""The MLflow backend: a sink that sends each kind of record with an ``MlflowClient``, and
:class:`MlflowTracker`, a :class:`~model_lib.tracking.tracker.Tracker` that sends to it.

With no ``MLFLOW_TRACKING_URI``, MLflow uses its default local store (``sqlite:///mlflow.db`` in
the working folder); ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` are honoured as MLflow
documents.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_lib import redaction
from model_lib.locking import store_creation
from model_lib.tracking import records
from model_lib.tracking.credentials import check_not_refused, load_secret_credentials, without_userinfo
from model_lib.tracking.logged_model import log_raw_text_model, register
from model_lib.tracking.queue import Refused, Rejected
from model_lib.tracking.system_metrics import SystemMonitor
from model_lib.tracking.tracker import Tracker
from model_lib.tracking.uploads import check_whole, local_files, upload_bound
from model_lib.tracking.uris import check_tracking_store, check_tracking_uri, public_uri

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "model-lib"
RESTARTS_TAG = "model_lib.restarts"
# Opens the experiment in the UI's model-training view (MLflow 3 otherwise guesses, or asks).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow's own HTTP settings, set (unless the user set them) so that one call to a server that does
# not answer costs seconds, not MLflow's default of 7 retries with 2**n back-off and 120 s timeouts.
# Around an artifact upload the timeout is scaled to the file's size (model_lib.tracking.uploads).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
SOURCE_TAGS = {"mlflow.source.name": "model-lib", "mlflow.source.type": "JOB"}


def configure_mlflow_process(uri: str) -> str:
    """Set, for this whole process, what MLflow reads from it: :data:`HTTP_LIMITS` in ``os.environ``
    (where the user did not set them), a quieter logger for a plugin's header provider, credentials
    masked in every log line (:func:`model_lib.redaction.install`), and the tracking URI without
    user:password (moved to MLflow's credential variables); return that URI.

    Process-wide on purpose: MLflow reads its HTTP settings from the environment on every request
    and has no per-client setting, so each tracker creation calls this once before its client.
    """
    import mlflow

    redaction.install()
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    bare = without_userinfo(uri)
    if bare != uri:
        mlflow.set_tracking_uri(bare)  # also MLFLOW_TRACKING_URI, which subprocesses inherit
    if not uri.startswith("arn:"):
        # sagemaker-mlflow's header provider runs for every URI and fails on any but an ARN: MLflow
        # then warns on each request ("list index out of range"), drowning the job's log.
        logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
    return bare


class MlflowSink:
    """Sends records to the MLflow tracking URI with ``client`` (an ``MlflowClient``).

    ``models`` maps a model file's path to the model already loaded (a Model record sent in the
    same process exports it without loading the file again).
    """

    def __init__(self, client: Any, uri: str) -> None:
        self.client = client
        self.uri = uri
        self.models: dict[str, Any] = {}
        self._last_model_id: dict[str, str] = {}  # by run id: what a Register record behind a Model registers
        self._senders: dict[type[records.Record], Callable[[Any, str], None]] = {
            records.Status: self._status,
            records.Params: self._params,
            records.Tags: self._tags,
            records.Restart: self._restart,
            records.Metrics: self._metrics,
            records.Epoch: self._epoch,
            records.Artifacts: self._artifacts,
            records.SystemMetrics: self._system_metrics,
            records.End: self._end,
            records.Dataset: self._dataset,
        }

    @property
    def target(self) -> str:
        """Return where records go, for log lines (no credentials)."""
        return f"MLflow at {public_uri(self.uri)}"

    def send(self, record: records.Record, run_id: str | None, save: Callable[[], None]) -> str | None:
        """Send ``record`` to run ``run_id``; return the run id after it (a Start creates it).

        Raises:
            Rejected: when MLflow answers HTTP 400/404 (a value it will never take).
            Refused: when MLflow answers HTTP 401/403, or there are no credentials to sign with.
            Exception: any other failure (server down, timeouts).
        """
        try:
            return self._dispatch(record, run_id, save)
        except Exception as exc:
            _classify(exc, self.target)
            raise

    def _dispatch(self, record: records.Record, run_id: str | None, save: Callable[[], None]) -> str | None:
        if isinstance(record, records.Start):
            return self._start(record)
        if run_id is None:  # pragma: no cover - a Start always comes first
            raise RuntimeError("no MLflow run yet")
        if isinstance(record, records.Model):
            model_id = log_raw_text_model(self.client, run_id, record, self.models.get(record.path), save)
            self._last_model_id[run_id] = model_id
        elif isinstance(record, records.Register):
            if record.model_id is None and run_id in self._last_model_id:
                record.model_id = self._last_model_id[run_id]
                save()
            register(self.client, run_id, record)
        else:
            self._senders[type(record)](record, run_id)
        return run_id

    def _start(self, record: records.Start) -> str:
        experiment = self.client.get_experiment_by_name(record.experiment)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(record.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                # Another first run created it since we looked (two at once): use theirs.
                experiment = self.client.get_experiment_by_name(record.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if EXPERIMENT_KIND_TAG not in experiment.tags:
                self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return str(self.client.create_run(experiment_id, tags=dict(SOURCE_TAGS)).info.run_id)

    def _status(self, record: records.Status, run_id: str) -> None:
        self.client.update_run(run_id, status=record.status)

    def _params(self, record: records.Params, run_id: str) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in record.params.items()])

    def _tags(self, record: records.Tags, run_id: str) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record.tags.items()])

    def _restart(self, record: records.Restart, run_id: str) -> None:
        current = self.client.get_run(run_id).data.tags.get(RESTARTS_TAG, "0")
        self.client.set_tag(run_id, RESTARTS_TAG, str(int(current) + 1 if current.isdigit() else 1))

    def _metrics(self, record: records.Metrics | records.Epoch, run_id: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(record.step)) for k, v in record.metrics.items()]
        self.client.log_batch(run_id, metrics=metrics)

    def _epoch(self, record: records.Epoch, run_id: str) -> None:
        if record.metrics:
            probe = next(iter(record.metrics))
            if int(record.step) in {m.step for m in self.client.get_metric_history(run_id, probe)}:
                return  # sent before a restart: every epoch is logged exactly once
        self._metrics(record, run_id)

    def _artifacts(self, record: records.Artifacts, run_id: str) -> None:
        for path in record.paths:
            if Path(path).is_file():
                with upload_bound([path]):
                    self.client.log_artifact(run_id, path, record.artifact_path)
                check_whole(local_files([path]), lambda _: self.client.list_artifacts(run_id, record.artifact_path), path)

    def _dataset(self, record: records.Dataset, run_id: str) -> None:
        self.client.log_inputs(run_id, [mlflow_dataset_input(record)])

    def _system_metrics(self, record: records.SystemMetrics, run_id: str) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(record.timestamp), int(record.step)) for k, v in record.metrics.items()]
        self.client.log_batch(run_id, metrics=metrics)

    def _end(self, record: records.End, run_id: str) -> None:
        self.client.set_terminated(run_id, record.status)


def mlflow_dataset_input(record: records.Dataset) -> Any:
    """Return the ``mlflow.entities.DatasetInput`` of ``record``: a dataset whose source is the URI
    (type "s3", "local", ...: MLflow's artifact dataset sources), with a ``num_rows`` profile, and the
    ``mlflow.data.context`` input tag."""
    import json
    from urllib.parse import urlparse

    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    scheme = urlparse(record.source).scheme
    dataset = Dataset(
        name=record.name,
        digest=record.digest,
        source_type=scheme if len(scheme) > 1 and scheme != "file" else "local",
        source=json.dumps({"uri": record.source}),
        profile=json.dumps({"num_rows": record.rows}) if record.rows is not None else None,
    )
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, record.context)])


def _classify(exc: BaseException, target: str) -> None:
    """Raise :class:`Rejected` or :class:`Refused` for a failure that is one; return for any other
    (an outage, waited out)."""
    from mlflow.exceptions import MlflowException

    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
    if status in (400, 404):
        raise Rejected(str(exc)) from exc
    reason = None
    if isinstance(exc, MlflowException) and status in (401, 403):
        first = str(exc).splitlines()[0] if str(exc) else ""
        reason = f"HTTP {status} {exc.error_code}: {first[:300]}"
    elif type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):  # botocore, signing for an ARN
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        raise Refused(f"{target} refused this process: {reason}. Check the credentials (README: MLflow, authentication)") from exc


class MlflowTracker(Tracker):
    """A :class:`~model_lib.tracking.tracker.Tracker` that logs to MLflow (the tracking URI MLflow
    resolves); each MLflow call is bounded (:data:`HTTP_LIMITS`). The experiment is ``experiment``,
    else MLFLOW_EXPERIMENT_NAME, else "model-lib".

    Raises:
        ConfigError: if the tracking URI cannot work (unknown scheme, malformed ARN, plugin missing),
            the credentials secret cannot be read, or the server refuses this process (HTTP 401/403).
        OutputError: if a local store (sqlite, file) or the pending file's folder cannot be written.
    """

    def __init__(
        self,
        run_id: str | None = None,
        experiment: str | None = None,
        *,
        pending_file: str | os.PathLike[str] | None = None,
        on_run_id: Callable[[str], None] | None = None,
        open_run: bool = True,
    ) -> None:
        import mlflow

        check_tracking_uri(mlflow.get_tracking_uri())
        check_tracking_store(mlflow.get_tracking_uri())  # before MLflow creates a database there, or a run
        self.uri = configure_mlflow_process(mlflow.get_tracking_uri())
        load_secret_credentials()
        # A new local sqlite store is created and migrated by its first client: one at a time.
        with store_creation(self.uri):
            self._sink = MlflowSink(mlflow.MlflowClient(), self.uri)
            check_not_refused(self._sink.client, self.uri, DEFAULT_EXPERIMENT)
        super().__init__(
            self._sink,
            experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
            run_id,
            pending_file=pending_file,
            header={"tracking_uri": public_uri(self.uri)},
            target=self._sink.target,
            on_run_id=on_run_id,
            open_run=open_run,
        )

    def log_model(self, model: Any, path: str | os.PathLike[str], examples: Sequence[str], step: int = 0) -> None:
        """Log the raw-string model saved at ``path`` (``model`` is the same model, already loaded);
        the run's metrics at ``step`` (the best epoch, 0-based) become the model's."""
        self._sink.models[str(Path(path).resolve())] = model
        super().log_model(model, path, examples, step)


def system_monitor(run_id: str, *, node: str | None, interval: float) -> SystemMonitor:
    """Return a :class:`~model_lib.tracking.system_metrics.SystemMonitor` for run ``run_id`` at the
    tracking URI MLflow resolves, for a process that opens no run (nothing is sent before it starts).

    Raises:
        ConfigError: if the credentials secret cannot be read.
    """
    import mlflow

    uri = configure_mlflow_process(mlflow.get_tracking_uri())
    load_secret_credentials()
    sink = MlflowSink(mlflow.MlflowClient(), uri)
    return SystemMonitor(sink, lambda: run_id, node=node, interval=interval, target=sink.target)
