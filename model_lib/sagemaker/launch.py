"""Start a SageMaker training job (SDK v2 ``Estimator``, script mode on our own image).

The channels are the DVC-pushed ``prepare`` outputs: ``dvc.api.get_url`` names each object in the
S3 remote, and every object is checked to exist before the job starts (get_url does not check).
SDK v3's ``ModelTrainer`` replaces the image's entrypoint with its own script, so the toolkit's
``train`` would never run: this uses v2's ``Estimator``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.config import TrainConfig, to_dict
from model_lib.errors import SageMakerEnvironmentError
from model_lib.prepared import channel_paths
from model_lib.sagemaker.environment import CONTAINER_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

# Passed into the job's environment when set here; never credentials.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MODEL_LIB_MLFLOW_TAGS")


def terraform_outputs(path: Path | None = None, chdir: Path = Path("terraform")) -> dict[str, Any]:
    """Return ``terraform output -json`` as {name: value}, from a saved file or by running terraform.

    Raises:
        SageMakerEnvironmentError: if the outputs cannot be read.
    """
    try:
        if path is not None:
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            done = subprocess.run(["terraform", f"-chdir={chdir}", "output", "-json"], capture_output=True, text=True, check=True)
            raw = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        raise SageMakerEnvironmentError(f"terraform outputs: cannot read them ({exc}); pass --terraform-outputs FILE") from None
    return {name: item["value"] if isinstance(item, dict) and "value" in item else item for name, item in raw.items()}


def channel_uris(prepared: Path = Path("data/prepared"), remote: str | None = None, repo: str = ".") -> dict[str, str]:
    """Return the S3 URI of each channel's file in the DVC remote (as ``dvc push`` stores it)."""
    import dvc.api

    return {name: dvc.api.get_url(str(path), repo=repo, remote=remote) for name, path in channel_paths(prepared).items()}


def check_objects_exist(uris: Mapping[str, str], s3: Any) -> None:
    """Check every channel object exists.

    Raises:
        SageMakerEnvironmentError: naming the first missing channel and its URI.
    """
    for name, uri in uris.items():
        if not uri.startswith("s3://"):
            raise SageMakerEnvironmentError(f"channel {name!r}: {uri} is not in S3; configure an S3 DVC remote")
        bucket, _, key = uri[len("s3://") :].partition("/")
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # botocore ClientError: 404/403
            raise SageMakerEnvironmentError(f"channel {name!r}: {uri} not found ({exc}); run `dvc push` first") from None


def job_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """Return the train config as hyperparameters (nulls left out: the job applies the same defaults)."""
    return {key: value for key, value in to_dict(config).items() if value is not None}


def build_estimator(
    config: TrainConfig,
    *,
    image_uri: str,
    role_arn: str,
    bucket: str,
    session: Any,
    instance_type: str = "ml.m5.xlarge",
    source_dir: Path = Path("entry_point"),
    environment: Mapping[str, str] | None = None,
    job_name: str | None = None,
) -> Any:
    """Return the SDK v2 Estimator for one job: script mode (entry_point/train.py) on ``image_uri``."""
    from sagemaker.estimator import Estimator

    name = job_name or f"model-lib-{time.strftime('%Y%m%d-%H%M%S')}"
    env: dict[str, Any] = {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}
    env.update(environment or {})
    return Estimator(
        image_uri=image_uri,
        role=role_arn,
        instance_count=1,
        instance_type=instance_type,
        entry_point="train.py",
        source_dir=str(source_dir),
        hyperparameters=job_hyperparameters(config),
        environment=env,
        output_path=f"s3://{bucket}/jobs",
        code_location=f"s3://{bucket}/code",
        checkpoint_s3_uri=f"s3://{bucket}/checkpoints/{name}",
        checkpoint_local_path=str(CONTAINER_CHECKPOINT_DIR),
        sagemaker_session=session,
        disable_profiler=True,
        debugger_hook_config=False,
        base_job_name="model-lib",
    )


def launch(
    config: TrainConfig,
    *,
    image_uri: str,
    role_arn: str,
    bucket: str,
    uris: Mapping[str, str],
    boto_session: Any,
    instance_type: str = "ml.m5.xlarge",
    job_name: str | None = None,
    wait: bool = False,
    source_dir: Path = Path("entry_point"),
) -> str:
    """Check the channel objects, build the Estimator and start the job; return the job name.

    Raises:
        SageMakerEnvironmentError: if a channel object is missing.
    """
    import sagemaker
    from sagemaker.inputs import TrainingInput

    check_objects_exist(uris, boto_session.client("s3"))
    session = sagemaker.Session(boto_session=boto_session, default_bucket=bucket)
    name = job_name or f"model-lib-{time.strftime('%Y%m%d-%H%M%S')}"
    estimator = build_estimator(
        config,
        image_uri=image_uri,
        role_arn=role_arn,
        bucket=bucket,
        session=session,
        instance_type=instance_type,
        job_name=name,
        source_dir=source_dir,
    )
    inputs = {channel: TrainingInput(uri, distribution="FullyReplicated") for channel, uri in uris.items()}
    estimator.fit(inputs=inputs, job_name=name, wait=wait, logs="All" if wait else "None")
    return name


def launch_from_cli(config: TrainConfig, args: Any) -> str:
    """Return the started job's name, with defaults for unset flags from the Terraform outputs."""
    import boto3

    outputs: dict[str, Any] = {}
    if not (args.image_uri and args.role_arn and args.bucket):
        outputs = terraform_outputs(args.terraform_outputs)
    image_uri = args.image_uri or f"{outputs['ecr_repository_url']}:cpu"
    return launch(
        config,
        image_uri=image_uri,
        role_arn=args.role_arn or outputs["sagemaker_role_arn"],
        bucket=args.bucket or outputs["bucket_name"],
        uris=channel_uris(),
        boto_session=boto3.Session(),
        instance_type=args.instance_type,
        job_name=args.job_name,
        wait=args.wait,
    )
