"""The MLflow side: one run per training, resumable by id, with params, per-epoch metrics, test
metrics, figures, the raw-string model and lineage tags. Nothing else in model_lib imports mlflow.

With no ``MLFLOW_TRACKING_URI``, MLflow uses its default local store (``sqlite:///mlflow.db`` in
the working folder); ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` are honoured as MLflow
documents. ``MODEL_LIB_MLFLOW_TAGS`` (a JSON object) adds tags set at launch, e.g. by SageMaker jobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
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


def lineage_tags(inputs: Mapping[str, str | os.PathLike[str]], repo: str | os.PathLike[str] = ".") -> dict[str, str]:
    """Return tags naming the code (git commit, dirty flag) and the data (MD5 of each input file)."""
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True
        )
        tags["git_commit"] = commit.stdout.strip()
        tags["git_dirty"] = "true" if status.stdout.strip() else "false"
    except (OSError, subprocess.CalledProcessError):
        tags["git_commit"] = "unknown"
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


RESTARTS_TAG = "model_lib.restarts"


class MlflowTracker:
    """Logs one training run to MLflow; ``run_id`` names it so another stage (or a restarted job)
    adds to it.

    As a context manager it ends the run FINISHED, KILLED when training was stopped by a signal (the
    run is reopened when training resumes), or FAILED on any other exception.
    """

    def __init__(self, run_id: str | None = None, experiment: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        if run_id is None:
            name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            mlflow.set_experiment(name)
        self._run = mlflow.start_run(run_id=run_id)
        self.run_id: str = self._run.info.run_id
        self.reopened = run_id is not None

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from model_lib.errors import TrainingInterrupted

        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)) else "FAILED")

    def count_restart(self) -> int:
        """Add one to the run's restart count tag; return the new count."""
        current = self._mlflow.get_run(self.run_id).data.tags.get(RESTARTS_TAG, "0")
        count = int(current) + 1 if current.isdigit() else 1
        self._mlflow.set_tag(RESTARTS_TAG, str(count))
        return count

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status``."""
        if self._mlflow.active_run() is not None:
            self._mlflow.end_run(status=status)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (None becomes 'null'); MLflow refuses a changed value of a logged param."""
        self._mlflow.log_params({k: "null" if v is None else v for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (lineage, source)."""
        self._mlflow.set_tags(dict(tags))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics with step = epoch (0-based)."""
        self._mlflow.log_metrics(metrics, step=epoch)

    def log_history(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log the epochs of ``history`` that the run does not hold yet (after a restart: an epoch
        whose checkpoint was saved but whose metrics were not sent before the process died)."""
        if not history:
            return
        probe = next(k for k in history[0] if k != "epoch")
        logged = {m.step for m in self._mlflow.MlflowClient().get_metric_history(self.run_id, probe)}
        for row in history:
            epoch = int(row["epoch"]) - 1
            if epoch not in logged:
                self.log_epoch(epoch, {k: float(v) for k, v in row.items() if k != "epoch"})

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Log the numeric entries of ``metrics`` (nested lists and nulls are skipped)."""
        numeric = {
            f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._mlflow.log_metrics(numeric)

    def log_artifacts(self, paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> None:
        """Upload the files that exist among ``paths``."""
        for path in paths:
            if Path(path).is_file():
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_raw_text_model(self, model: Any, examples: Sequence[str]) -> str:
        """Log the raw-string Keras model (Keras flavour) with its signature and input example.

        The flavour's model is stored in Keras' exported (SavedModel) format, so
        ``mlflow.pyfunc.load_model`` works in a process that never imported model_lib (a ``.keras``
        file needs our registered layers importable). Two MLflow 3.17 bugs shape this:
        ``mlflow.keras.log_model`` writes the input example before creating its folder
        (FileNotFoundError), and ``save_exported_model=True`` cannot express a string input
        (it passes the schema's numpy dtype name to ``tf.TensorSpec``). So the flavour folder is
        written by ``save_model`` into a folder made first, the export is written with a
        ``tf.string`` signature by Keras, and the flavour's ``save_exported_model`` flag is set.

        Returns:
            the model URI (``runs:/<run id>/model``) that ``mlflow.pyfunc.load_model`` accepts.
        """
        import tempfile

        import keras
        import numpy as np
        import tensorflow as tf
        from mlflow.models import Model, infer_signature

        from model_lib.inference import predict

        example = np.asarray(list(examples), dtype=object).reshape(-1, 1)
        signature = infer_signature(example, predict(model, list(examples)).reshape(-1, 1))
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "model"
            target.mkdir()
            self._mlflow.keras.save_model(
                model, str(target), signature=signature, input_example=example, pip_requirements=_serving_requirements()
            )
            data = target / "data"
            (data / "model.keras").unlink()
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serve", model.call, input_signature=[tf.TensorSpec([None, 1], tf.string, name="review")])
            archive.write_out(str(data / "model"), verbose=False)
            description = Model.load(str(target))
            description.flavors["keras"]["save_exported_model"] = True
            description.save(str(target / "MLmodel"))
            self._mlflow.log_artifacts(str(target), artifact_path="model")
        return f"runs:/{self.run_id}/model"


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


def write_run_reference(path: str | os.PathLike[str], tracker: MlflowTracker) -> None:
    """Write the run id, so the next stage adds to the same run.

    The file is committed to git, so it holds no tracking URI: a local store's URI is a machine's
    path, and a server's may carry credentials.
    """
    write_json(path, {"run_id": tracker.run_id})


def read_run_reference(path: str | os.PathLike[str]) -> str | None:
    """Return the run id written by :func:`write_run_reference`, or None if there is no file."""
    if not Path(path).is_file():
        return None
    return str(json.loads(Path(path).read_text(encoding="utf-8"))["run_id"])
