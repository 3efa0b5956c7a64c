"""Which SageMaker training job made a registered MLflow model version: the ``sagemaker.job_name``
tag the job's entry point sets on its run (``model_lib.sagemaker.job``), read back for
``model-lib deploy models:/NAME/N``."""

from __future__ import annotations

from model_lib.errors import ConfigError

JOB_NAME_TAG = "sagemaker.job_name"


def registered_job_name(name: str, version: str) -> str:
    """Return the training job that made version ``version`` of registered model ``name`` (the
    ``sagemaker.job_name`` tag of the version's run), asking the MLflow server of MLFLOW_TRACKING_URI.

    Raises:
        ConfigError: no such version, no run, or a run no SageMaker job made (trained here: no model.tar.gz).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from model_lib.tracking.credentials import load_secret_credentials
    from model_lib.tracking.mlflow_sink import configure_mlflow_process
    from model_lib.tracking.uris import check_tracking_uri, public_uri

    check_tracking_uri(mlflow.get_tracking_uri())
    uri = configure_mlflow_process(mlflow.get_tracking_uri())
    load_secret_credentials()
    client, named = mlflow.MlflowClient(), f"models:/{name}/{version}"
    try:
        found = client.get_model_version(name, version)
        run = client.get_run(found.run_id) if found.run_id else None
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise ConfigError(f"{named}: no such registered model version at {public_uri(uri)}") from None
        raise
    if run is None:
        raise ConfigError(f"{named}: the version names no run, so no training job")
    job = run.data.tags.get(JOB_NAME_TAG)
    if not job:
        raise ConfigError(
            f"{named}: run {run.info.run_id} was not trained by a SageMaker job (no {JOB_NAME_TAG} tag), so there is "
            "no model.tar.gz to serve; register the model of a `model-lib launch` job, or pass its s3:// URI"
        )
    return str(job)
