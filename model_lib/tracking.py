"""The MLflow side: one run per training, resumable by id, with params, per-epoch metrics, test
metrics, figures, the raw-string model and lineage tags. Nothing else in model_lib imports mlflow
(but :mod:`model_lib.mlflow_model`, the logged model's own code, which MLflow runs when it loads).

With no ``MLFLOW_TRACKING_URI``, MLflow uses its default local store (``sqlite:///mlflow.db`` in
the working folder); ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` are honoured as MLflow
documents. ``MODEL_LIB_MLFLOW_TAGS`` (a JSON object) adds tags set at launch, e.g. by SageMaker jobs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from model_lib._io import write_json

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "model-lib"
TAGS_ENV = "MODEL_LIB_MLFLOW_TAGS"


def file_md5(path: str | os.PathLike[str]) -> str:
    """Return the MD5 of a file's bytes (what DVC 3 records for a file output)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state(repo: str | os.PathLike[str] = ".") -> dict[str, str]:
    """Return git_commit, git_short (``--short=7``, the form image tags use) and git_dirty of
    ``repo``; each is "unknown" outside git (a training container has no git)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit, short = git("rev-parse", "HEAD"), git("rev-parse", "--short=7", "HEAD")
        dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_short": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_short": short, "git_dirty": dirty}


def lineage_tags(inputs: Mapping[str, str | os.PathLike[str]], repo: str | os.PathLike[str] = ".") -> dict[str, str]:
    """Return tags naming the code (git commit, dirty flag) and the data (MD5 of each input file)."""
    git = git_state(repo)
    tags = {"git_commit": git["git_commit"]}
    if git["git_dirty"] != "unknown":
        tags["git_dirty"] = git["git_dirty"]
    for name, path in inputs.items():
        if Path(path).is_file():
            tags[f"dvc_md5.{name}"] = file_md5(path)
    extra = os.environ.get(TAGS_ENV)
    if extra:
        try:
            tags.update({str(k): str(v) for k, v in json.loads(extra).items()})
        except (ValueError, AttributeError):
            logger.warning("%s is not a JSON object; ignored", TAGS_ENV)
    return tags


SECRET_ENV = "MODEL_LIB_MLFLOW_SECRET"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def load_secret_credentials(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Put the MLflow credentials held in the AWS Secrets Manager secret named by
    ``MODEL_LIB_MLFLOW_SECRET`` into ``environ`` (default: this process's environment), where
    MLflow's client reads them; return the secret's name, or None when none is named.

    The secret is a JSON object ``{"username": ..., "password": ...}`` (basic auth) or
    ``{"token": ...}`` (bearer token). Only its name travels in a job's environment; its value is
    read here, with the job role's permission, and never logged.

    Raises:
        ConfigError: if the secret cannot be read or holds neither form (the message names the
            secret and the fields, never a value).
    """
    from model_lib.errors import ConfigError

    environ = os.environ if environ is None else environ
    name = environ.get(SECRET_ENV)
    if not name:
        return None
    try:
        import boto3

        raw = boto3.session.Session().client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    except Exception as exc:  # botocore: no such secret, access denied, no credentials, unreachable
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise ConfigError(f"{SECRET_ENV}={name!r}: the secret could not be read ({code})") from None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not (isinstance(value, dict) and ((value.get("username") and value.get("password")) or value.get("token"))):
        fields = sorted(value) if isinstance(value, dict) else "not a JSON object"
        raise ConfigError(
            f"{SECRET_ENV}={name!r}: the secret holds {fields}; expected a JSON object with "
            '"username" and "password", or with "token"'
        )
    for stale in _CREDENTIAL_ENV:  # MLflow prefers basic auth: a leftover username would beat the token
        environ.pop(stale, None)
    if isinstance(value, dict) and value.get("username") and value.get("password"):
        environ["MLFLOW_TRACKING_USERNAME"] = str(value["username"])
        environ["MLFLOW_TRACKING_PASSWORD"] = str(value["password"])
    else:
        environ["MLFLOW_TRACKING_TOKEN"] = str(value["token"])
    return name


RESTARTS_TAG = "model_lib.restarts"
PENDING_FILE = "mlflow-pending.json"
WAIT_ENV = "MODEL_LIB_MLFLOW_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 60.0
# MLflow's own HTTP settings, set (unless the user set them) so that one call to a server that does
# not answer costs seconds, not MLflow's default of 7 retries with 2**n back-off and 120 s timeouts.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Opens the experiment in the UI's model-training view (MLflow 3 otherwise guesses, or asks).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
KNOWN_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "arn")


def public_uri(uri: str) -> str:
    """Return ``uri`` without user:password (for logs and messages)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def check_tracking_uri(uri: str) -> None:
    """Check a tracking URI can work at all (a wrong configuration fails before training).

    Raises:
        ConfigError: for a URI whose scheme MLflow cannot track to.
    """
    from model_lib.errors import ConfigError

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    if scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={public_uri(uri)!r}: unknown scheme {scheme!r}; expected one of {', '.join(KNOWN_SCHEMES)}"
        )
    if scheme == "arn":
        if not re.fullmatch(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/.+", uri):
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={uri!r}: not a SageMaker MLflow ARN; expected "
                "arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>"
            )
        if importlib.util.find_spec("sagemaker_mlflow") is None:
            raise ConfigError(f"MLFLOW_TRACKING_URI={uri!r} needs the sagemaker-mlflow plugin: pip install sagemaker-mlflow")


def check_model_name(name: str) -> None:
    """Check a registered model name before anything trains.

    Raises:
        ConfigError: unless it is 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit.
    """
    from model_lib.errors import ConfigError

    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"--register-model {name!r}: expected 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


class MlflowTracker:
    """Logs one training run to MLflow, and never stops training because of it.

    Every record (run start, params, tags, each epoch's metrics, artifacts, the model, the end) is
    queued, written to ``pending_file`` and sent in order; a record is dropped from the queue only
    once MLflow took it. When the server does not answer, training goes on: one warning says so, the
    queue waits in ``pending_file`` (the checkpoint folder), and it is sent at a later epoch, when
    the run ends (waiting up to ``MODEL_LIB_MLFLOW_WAIT_SECONDS``, default 60 s, for the server), at
    the next restart, or by ``model-lib mlflow-sync``. Each MLflow call is bounded (:data:`HTTP_LIMITS`).

    ``run_id`` reopens a run (another stage, a restarted job); without it a run is created in
    ``experiment`` (MLFLOW_EXPERIMENT_NAME, else "model-lib") once the server answers. With
    ``open_run=False`` it only sends what ``pending_file`` holds. As a context
    manager it ends the run FINISHED, KILLED when training was stopped by a signal (reopened when
    training resumes), or FAILED on any other exception.

    Raises:
        ConfigError: if the tracking URI cannot work (unknown scheme, malformed ARN, plugin missing),
            the credentials secret cannot be read, or the server refuses this process (HTTP 401/403).
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

        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        self._mlflow = mlflow
        self.uri = mlflow.get_tracking_uri()
        check_tracking_uri(self.uri)
        if not self.uri.startswith("arn:"):
            # sagemaker-mlflow's header provider runs for every URI and fails on any but an ARN: MLflow
            # then warns on each request ("list index out of range"), drowning the job's log.
            logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
        load_secret_credentials()
        self._client = mlflow.MlflowClient()
        self._check_not_refused()
        self._pending_file = Path(pending_file) if pending_file is not None else None
        self._on_run_id = on_run_id
        self._models: dict[str, Any] = {}
        self._retry_at = 0.0
        self._failures = 0
        self.run_id: str | None = run_id
        self.reopened = run_id is not None
        self._queue: list[dict[str, Any]] = self._load_pending()
        if not open_run:
            pass  # only send what is pending (model-lib mlflow-sync)
        elif self.run_id is None and not any(op["op"] == "start" for op in self._queue):
            name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            self._queue.append({"op": "start", "experiment": name})
        elif self.run_id is not None:
            self._queue.append({"op": "status", "status": "RUNNING"})
        self.flush(refused_is_fatal=True)

    def _check_not_refused(self) -> None:
        """Ask a tracking server once whether it accepts this process, by HTTP status: AWS answers a
        refusal with a body MLflow cannot read as one (it would look like a server error, waited out).

        Raises:
            ConfigError: on HTTP 401 or 403.
        """
        from model_lib.errors import ConfigError

        try:
            creds = self._client._tracking_client.store.get_host_creds()
        except Exception:  # a local store (sqlite, file): nobody to refuse us
            return
        from mlflow.utils.rest_utils import http_request

        try:
            response = http_request(
                creds,
                "/api/2.0/mlflow/experiments/get-by-name",
                "GET",
                max_retries=0,
                timeout=10,
                params={"experiment_name": DEFAULT_EXPERIMENT},
            )
        except Exception:  # unreachable now: an outage, which the queue waits out
            return
        if response.status_code in (401, 403):
            raise ConfigError(
                f"MLflow at {public_uri(self.uri)} refused this process: HTTP {response.status_code} "
                f"{response.text.strip()[:300]!r}. Check the credentials (README: MLflow, authentication)"
            )

    # -- the queue --------------------------------------------------------------------------------

    def _load_pending(self) -> list[dict[str, Any]]:
        if self._pending_file is None or not self._pending_file.is_file():
            return []
        try:
            saved = json.loads(self._pending_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("%s is unreadable; its MLflow records are lost", self._pending_file)
            return []
        if self.run_id is None:
            self.run_id = saved.get("run_id")
        if saved.get("run_id") not in (None, self.run_id):
            logger.warning(
                "%s holds records of MLflow run %s, not of run %s: left there", self._pending_file, saved["run_id"], self.run_id
            )
            self._pending_file = self._pending_file.with_name(f"{self._pending_file.stem}-{self.run_id}.json")
            return []
        return list(saved.get("queue", []))

    def _persist(self) -> None:
        if self._pending_file is None:
            return
        if self._queue:
            write_json(self._pending_file, {"run_id": self.run_id, "tracking_uri": public_uri(self.uri), "queue": self._queue})
        elif self._pending_file.is_file():
            self._pending_file.unlink()

    @property
    def pending(self) -> list[str]:
        """Return what is still waiting to be sent, one word per record (e.g. ["epoch", "model"])."""
        return [op["op"] for op in self._queue]

    def _add(self, op: dict[str, Any]) -> None:
        self._queue.append(op)
        self._persist()
        self.flush()

    def flush(self, wait: float = 0.0, *, refused_is_fatal: bool = False) -> bool:
        """Send the queued records in order; return whether none is left.

        While the server is down, a record is tried again only after a back-off (30 s, doubling up to
        10 min), so training does not wait on it; ``wait`` > 0 keeps trying for that many seconds.

        Raises:
            ConfigError: with ``refused_is_fatal`` (before training starts), if the server answered
                but refused the credentials (HTTP 401/403) or none could be found to sign with.
        """
        deadline = time.monotonic() + wait
        if not self._queue:
            return True
        if time.monotonic() < self._retry_at and wait <= 0:
            return False
        while True:
            try:
                while self._queue:
                    self._send(self._queue[0])
                    self._queue.pop(0)
                    self._persist()
            except Exception as exc:  # the tracking server or client failed: never a reason to stop training
                refusal = _refusal(exc)
                if _rejected_for_good(exc):
                    # A record the server will never take (a bad value): sending it again would hold
                    # back every record behind it, the run's end included.
                    logger.warning(
                        "MLflow refused the %s record for good (%s); it is dropped", self._queue[0]["op"], str(exc)[:300]
                    )
                    self._queue.pop(0)
                    self._persist()
                    continue
                if refused_is_fatal and refusal:
                    from model_lib.errors import ConfigError

                    self._persist()
                    raise ConfigError(
                        f"MLflow at {public_uri(self.uri)} refused this process: {refusal}. Check the credentials "
                        "(README: MLflow, authentication)"
                    ) from None
                self._failures += 1
                self._retry_at = time.monotonic() + min(600.0, 30.0 * 2 ** (self._failures - 1))
                if self._failures == 1:
                    logger.warning(
                        "MLflow at %s did not take a record (%s: %s); training goes on, and %d records wait in %s",
                        public_uri(self.uri),
                        type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "",
                        len(self._queue),
                        self._pending_file or "memory",
                    )
                self._persist()
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
                continue
            if self._failures:
                logger.info("MLflow at %s answers again: the records kept meanwhile are sent", public_uri(self.uri))
            self._failures = 0
            return True

    def _send(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind = op["op"]
        if kind == "start":
            experiment = self._client.get_experiment_by_name(op["experiment"])
            if experiment is None:
                experiment_id = self._client.create_experiment(op["experiment"], tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            else:
                experiment_id = experiment.experiment_id
                if EXPERIMENT_KIND_TAG not in experiment.tags:
                    self._client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            tags = {"mlflow.source.name": "model-lib", "mlflow.source.type": "JOB"}
            self.run_id = self._client.create_run(experiment_id, tags=tags).info.run_id
            if self._on_run_id is not None:
                self._on_run_id(self.run_id)
            return
        if self.run_id is None:  # pragma: no cover - "start" always comes first
            raise RuntimeError("no MLflow run yet")
        if kind == "status":
            self._client.update_run(self.run_id, status=op["status"])
        elif kind == "params":
            self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in op["params"].items()])
        elif kind == "tags":
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in op["tags"].items()])
        elif kind == "restart":
            current = self._client.get_run(self.run_id).data.tags.get(RESTARTS_TAG, "0")
            self._client.set_tag(self.run_id, RESTARTS_TAG, str(int(current) + 1 if current.isdigit() else 1))
        elif kind in ("metrics", "epoch"):
            step = int(op.get("step", 0))
            if kind == "epoch":
                probe = next(iter(op["metrics"]))
                if step in {m.step for m in self._client.get_metric_history(self.run_id, probe)}:
                    return  # sent before a restart: every epoch is logged exactly once
            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in op["metrics"].items()])
        elif kind == "artifacts":
            for path in op["paths"]:
                if Path(path).is_file():
                    self._client.log_artifact(self.run_id, path, op.get("artifact_path"))
        elif kind == "model":
            self._log_raw_text_model(op)
        elif kind == "register":
            self._register(op["name"], op.get("model_id"))
        elif kind == "end":
            self._client.set_terminated(self.run_id, op["status"])
        else:  # pragma: no cover - a record from a newer version
            logger.warning("unknown MLflow record %r skipped", kind)

    # -- what the lifecycle and the training loop call ---------------------------------------------

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from model_lib.errors import TrainingInterrupted

        if exc_type is None:
            self.end("FINISHED")
        else:
            # A stopped job has seconds before it is killed: it does not wait for the server.
            self.end("KILLED" if isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)) else "FAILED", wait=5.0)

    def count_restart(self) -> None:
        """Add one to the run's restart count tag (``model_lib.restarts``)."""
        self._add({"op": "restart"})

    def end(self, status: str = "FINISHED", wait: float | None = None) -> bool:
        """End the run with ``status``, waiting up to ``wait`` seconds (default: MODEL_LIB_MLFLOW_WAIT_SECONDS)
        for a server that does not answer; return whether everything was sent.

        What could not be sent stays in the pending file, and one warning names it.
        """
        self._queue.append({"op": "end", "status": status})
        self._persist()
        if wait is None:
            wait = float(os.environ.get(WAIT_ENV) or DEFAULT_WAIT_SECONDS)
        if self.flush(wait=wait):
            return True
        counts = {kind: self.pending.count(kind) for kind in dict.fromkeys(self.pending)}
        logger.warning(
            "MLflow at %s did not answer: not sent yet: %s; kept in %s; send them with `model-lib mlflow-sync --checkpoints %s`",
            public_uri(self.uri),
            ", ".join(f"{n} {k}" if n > 1 else k for k, n in counts.items()),
            self._pending_file or "memory (no pending file)",
            self._pending_file.parent if self._pending_file else "DIR",
        )
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (None becomes 'null'); MLflow refuses a changed value of a logged param."""
        self._add({"op": "params", "params": {k: "null" if v is None else v for k, v in params.items()}})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (lineage, source)."""
        self._add({"op": "tags", "tags": dict(tags)})

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics with step = epoch (0-based), once even across restarts."""
        self._add({"op": "epoch", "step": epoch, "metrics": {k: float(v) for k, v in metrics.items()}})

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
        self._add({"op": "metrics", "metrics": numeric})

    def log_artifacts(self, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> None:
        """Upload the files that exist among ``paths`` (they are read when sent)."""
        self._add({"op": "artifacts", "paths": [str(Path(p).resolve()) for p in paths], "artifact_path": artifact_path})

    def log_model(self, model: Any, path: str | os.PathLike[str], examples: Sequence[str], step: int = 0) -> None:
        """Log the raw-string model saved at ``path`` (``model`` is the same model, already loaded);
        the run's metrics at ``step`` (the best epoch, 0-based) become the model's."""
        key = str(Path(path).resolve())
        self._models[key] = model
        self._add({"op": "model", "path": key, "examples": list(examples), "step": int(step)})

    def register_model(self, name: str) -> None:
        """Register the run's logged model as a new version of registered model ``name``, tagged
        with the run's lineage (git commit, data MD5s); once per run, even across restarts."""
        self._add({"op": "register", "name": name})

    def _log_raw_text_model(self, op: dict[str, Any]) -> str:
        """Log the raw-string model as a first-class MLflow logged model (``models:/<model id>``).

        The model is :mod:`model_lib.mlflow_model` (an MLflow "model from code": no pickle) around
        the Keras SavedModel export of the raw-string model, with a ``review`` string column as
        signature and an input example. Every step can be sent again: the logged model is created
        once (its id kept in the queued record), its files are uploaded again over themselves, and
        the run is linked to it (with the run's metrics at the record's step) only if it is not yet.

        Returns:
            the model URI ``models:/<model id>``.
        """
        import tempfile

        import pandas as pd
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema

        from model_lib import mlflow_model
        from model_lib.export import write_saved_model

        model = self._models.get(op["path"])  # None: write_saved_model loads the file
        run = self._client.get_run(str(self.run_id))
        if not op.get("model_id"):
            created = self._client.create_logged_model(
                experiment_id=run.info.experiment_id,
                name="model",
                source_run_id=self.run_id,
                params={k: str(v) for k, v in run.data.params.items()},
            )
            op["model_id"] = created.model_id
            self._persist()
        model_id = str(op["model_id"])
        logged = self._client.get_logged_model(model_id)
        signature = ModelSignature(
            inputs=Schema([ColSpec("string", mlflow_model.COLUMN)]), outputs=Schema([ColSpec("float", "probability")])
        )
        with tempfile.TemporaryDirectory() as folder:
            export = Path(folder) / "saved_model"
            write_saved_model(op["path"], export, model)
            target = Path(folder) / "model"
            self._mlflow.pyfunc.save_model(
                str(target),
                python_model=mlflow_model.__file__,
                artifacts={"saved_model": str(export)},
                signature=signature,
                input_example=pd.DataFrame({mlflow_model.COLUMN: list(op["examples"])}),
                pip_requirements=_serving_requirements(),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location, model_uuid=model_id, run_id=self.run_id, model_id=model_id
                ),
            )
            self._client.log_model_artifacts(model_id, str(target))
        step = int(op.get("step", 0))
        if model_id not in {output.model_id for output in (run.outputs.model_outputs if run.outputs else [])}:
            # The model's own metrics: the run's at its step (what MLflow's log_model links).
            linked = [
                Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=self.run_id)
                for key in run.data.metrics
                for m in self._client.get_metric_history(str(self.run_id), key)
                if m.step == step and m.model_id is None
            ]
            self._client.log_batch(str(self.run_id), metrics=linked)
            self._client.log_outputs(str(self.run_id), [LoggedModelOutput(model_id, step)])
        self._client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        for queued in self._queue[1:]:  # a registration queued behind registers exactly this model
            if queued["op"] == "register":
                queued.setdefault("model_id", model_id)
        return f"models:/{model_id}"

    def _register(self, name: str, model_id: str | None) -> None:
        from mlflow.exceptions import MlflowException

        run = self._client.get_run(str(self.run_id))
        if model_id is None:  # queued before a restart that lost the id: the run's logged model
            outputs = run.outputs.model_outputs if run.outputs else []
            if not outputs:
                raise RuntimeError(f"run {self.run_id} has no logged model to register")
            model_id = outputs[-1].model_id
        if self._client.search_model_versions(f"name = '{name}' and run_id = '{self.run_id}'"):
            return  # registered before a restart
        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {k: v for k, v in run.data.tags.items() if k in ("git_commit", "git_dirty") or k.startswith("dvc_md5.")}
        version = self._client.create_model_version(
            name, source=f"models:/{model_id}", run_id=self.run_id, tags=tags, model_id=model_id
        )
        logger.info("registered model %s version %s (model %s)", name, version.version, model_id)


def _refusal(exc: BaseException) -> str | None:
    """Return why the server refused us (HTTP 401/403, or no credentials to sign a request with),
    or None for any other failure (server down, timeouts: those are waited out)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException) and exc.get_http_status_code() in (401, 403):
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"HTTP {exc.get_http_status_code()} {exc.error_code}: {first[:300]}"
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return f"{type(exc).__name__}: {exc}"
    return None


def _rejected_for_good(exc: BaseException) -> bool:
    """Return whether the server answered that this record is wrong (HTTP 400/404), as opposed to
    being down, overloaded or refusing our credentials."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.get_http_status_code() in (400, 404)


def _serving_requirements() -> list[str]:
    """Return what loading the exported model needs, pinned to this environment's versions.

    MLflow's own inference loads the model in a subprocess and, for this flavour, falls back to
    listing Keras alone.
    """
    from importlib import metadata

    pins = []
    for names in (("tensorflow-cpu", "tensorflow"), ("keras",), ("mlflow",), ("pandas",), ("numpy",)):
        for name in names:
            try:
                pins.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pins


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
