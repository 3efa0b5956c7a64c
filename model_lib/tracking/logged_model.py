"""The trained model in MLflow: the raw-string model packaged as a pyfunc "model from code" and
logged as a first-class logged model (``models:/<model id>``), and its registration as a version
of a registered model.

Both can be sent again after a failure at any step (the queue retries a record whole): nothing is
created twice.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_lib.tracking.lineage import CODE_TAGS, DATA_TAG_PREFIX
from model_lib.tracking.records import Model, Register
from model_lib.tracking.uploads import check_whole, local_files, upload_bound

logger = logging.getLogger(__name__)


def log_raw_text_model(client: Any, run_id: str, record: Model, model: Any, save: Callable[[], None]) -> str:
    """Log the raw-string model of ``record`` to run ``run_id``; return its model id.

    The model is :mod:`model_lib.mlflow_model` (an MLflow "model from code": no pickle) around
    the Keras SavedModel export of the raw-string model (``model``: the same model already loaded,
    or None to load ``record.path``), with a ``review`` string column as signature and an input
    example. The logged model is created once (its id kept in ``record``, then ``save`` is
    called), its files are uploaded again over themselves (bounded by
    :func:`~model_lib.tracking.uploads.upload_bound`, then checked whole), and the run is linked to
    it (with the run's metrics at the record's step) only if it is not yet.

    Raises:
        IncompleteUpload: if the server holds a file of the model with another size (sent again later).
    """
    from mlflow.entities import LoggedModelStatus

    run = client.get_run(run_id)
    if not record.model_id:
        created = client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name="model",
            source_run_id=run_id,
            params={k: str(v) for k, v in run.data.params.items()},
        )
        record.model_id = created.model_id
        save()
    model_id = str(record.model_id)
    with tempfile.TemporaryDirectory() as folder:
        target = _save_pyfunc(Path(folder), record, model, client.get_logged_model(model_id).artifact_location, run_id)
        with upload_bound([target]):
            client.log_model_artifacts(model_id, str(target))
        # READY only once the server holds every file whole (an upload cut short is sent again)
        check_whole(local_files([target]), lambda path: client.list_logged_model_artifacts(model_id, path), f"model {model_id}")
    if model_id not in {output.model_id for output in (run.outputs.model_outputs if run.outputs else [])}:
        _link_to_run(client, run, model_id, record.step)
    client.finalize_logged_model(model_id, LoggedModelStatus.READY)
    return model_id


def _save_pyfunc(folder: Path, record: Model, model: Any, artifact_location: str, run_id: str) -> Path:
    """Write the pyfunc model folder under ``folder``; return its path."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model as MlflowModel
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from model_lib import mlflow_model
    from model_lib.export import write_saved_model

    model_id = str(record.model_id)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", mlflow_model.COLUMN)]), outputs=Schema([ColSpec("float", "probability")])
    )
    export = folder / "saved_model"
    write_saved_model(record.path, export, model)
    target = folder / "model"
    mlflow.pyfunc.save_model(
        str(target),
        python_model=mlflow_model.__file__,
        artifacts={"saved_model": str(export)},
        signature=signature,
        input_example=pd.DataFrame({mlflow_model.COLUMN: list(record.examples)}),
        pip_requirements=serving_requirements(),
        mlflow_model=MlflowModel(artifact_path=artifact_location, model_uuid=model_id, run_id=run_id, model_id=model_id),
    )
    return target


def _link_to_run(client: Any, run: Any, model_id: str, step: int) -> None:
    """Make the run's metrics at ``step`` the model's own and record the model as the run's output
    (what MLflow's log_model links)."""
    from mlflow.entities import LoggedModelOutput, Metric

    run_id = run.info.run_id
    linked = [
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
        for key in run.data.metrics
        for m in client.get_metric_history(run_id, key)
        if m.step == step and m.model_id is None
    ]
    client.log_batch(run_id, metrics=linked)
    client.log_outputs(run_id, [LoggedModelOutput(model_id, step)])


def register(client: Any, run_id: str, record: Register) -> None:
    """Register the logged model ``record.model_id`` (None: the run's last logged model) of run
    ``run_id`` as a new version of ``record.name``, tagged with the run's lineage; nothing if the
    run already has a version of it (registered before a restart).

    Raises:
        RuntimeError: if the run has no logged model.
    """
    from mlflow.exceptions import MlflowException

    run = client.get_run(run_id)
    model_id = record.model_id
    if model_id is None:  # queued before a restart that lost the id: the run's logged model
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise RuntimeError(f"run {run_id} has no logged model to register")
        model_id = outputs[-1].model_id
    if client.search_model_versions(f"name = '{record.name}' and run_id = '{run_id}'"):
        return
    try:
        client.create_registered_model(record.name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {k: v for k, v in run.data.tags.items() if k in CODE_TAGS or k.startswith(DATA_TAG_PREFIX)}
    version = client.create_model_version(record.name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id)
    logger.info("registered model %s version %s (model %s)", record.name, version.version, model_id)


def serving_requirements() -> list[str]:
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
