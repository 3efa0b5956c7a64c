"""The options of a SageMaker training job: the flags of ``model-lib launch`` and of MODEL_LIB_LAUNCH_OPTIONS.

Standard library only: ``model_lib.cli`` builds its parser from these fields for every command, so a
stage that never launches a job (a local ``dvc repro``) imports this module and nothing else of the
SageMaker adapter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def _option(default: Any, help: str, metavar: str | None = None) -> Any:
    """A LaunchOptions field that is also a flag of ``model-lib launch`` (and of MODEL_LIB_LAUNCH_OPTIONS):
    ``--<name-with-dashes>``, its type from the annotation, ``help`` as its help text."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to run the job; every field has the default ``model-lib launch`` uses. A field made with
    ``_option`` is a flag of ``model-lib launch`` (model_lib.cli derives the flags from these fields)."""

    image_uri: str | None = _option(
        None,
        "training image (default: Terraform output ecr_repository_url + ':<cpu|gpu>-<git short commit>', "
        "the tag `make docker-push` pushes; gpu for ml.p*/ml.g* instance types)",
    )
    role_arn: str | None = _option(None, "execution role ARN (default: Terraform output sagemaker_role_arn)")
    bucket: str | None = _option(None, "S3 bucket for code, outputs and checkpoints (default: Terraform output bucket_name)")
    terraform_outputs: Path | None = _option(None, "JSON from `terraform output -json` (default: run it)")  # noqa: RUF009 - a field()
    remote: str | None = _option(None, "DVC remote whose S3 objects become the channels (default: the first S3 remote)")
    instance_type: str = _option("ml.m5.xlarge", "instance type (default: ml.m5.xlarge)")
    instance_count: int = _option(
        1,
        "instances (default 1); N > 1 trains data parallel on N hosts on the JAX backend (KERAS_BACKEND=jax is set "
        "for the job and the <cpu|gpu>-jax-<commit> image is used)",
    )
    spot: bool = _option(False, "managed spot training: interrupted jobs resume from checkpoints")
    max_run: int = _option(24 * 3600, "seconds of training before the job is stopped (default 86400)")
    max_wait: int | None = _option(None, "spot: seconds including waits for capacity, >= --max-run (default 2x)")
    job_name: str | None = _option(None, "training job name (default: model-lib-<timestamp>)")
    allow_local_tracking: bool = _option(False, "accept an MLFLOW_TRACKING_URI on this machine (SageMaker local mode)")
    register_model: str | None = _option(
        None, "register the job's logged model as a new version of NAME in MLflow", metavar="NAME"
    )
    mlflow_secret: str | None = _option(
        None,
        "AWS Secrets Manager secret with the MLflow server's credentials, read by the job with its role "
        '({"username": ..., "password": ...} or {"token": ...}); only the name is passed to the job',
        metavar="NAME",
    )
    source_dir: Path = Path("entry_point")
    prepared: Path = Path("data/prepared")
    repo: Path = Path(".")

    @property
    def spot_max_wait(self) -> int:
        """Return the seconds a spot job may wait for capacity and train: ``max_wait``, else 2 x ``max_run``."""
        return self.max_wait if self.max_wait is not None else 2 * self.max_run


__all__ = ["LaunchOptions"]
