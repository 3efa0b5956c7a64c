"""Local process mode: the real sagemaker-training toolkit on this machine, no Docker.

Lays out a SAGEMAKER_BASE_DIR the way a training container sees /opt/ml and runs the toolkit's
``train`` in a child process, with the entry point folder as the submitted code. Traps found here
(see DESIGN.md): output/ must exist or a failing script exits 0 without a failure file; the host must
be "localhost" (other names wait on DNS for minutes); code/ must stay empty or the submitted code is
ignored; a requirements.txt in the source folder is pip-installed (ours has none).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.config import TrainConfig, to_dict
from model_lib.errors import SageMakerEnvironmentError

logger = logging.getLogger(__name__)

CHANNEL_FILES = {"train": "train.npz", "test": "test.npz", "vocab": "vocab.txt", "embeddings": "embeddings.npy"}
_MARKER = ".model-lib-sagemaker-local"


def default_source_dir() -> Path:
    """Return ``entry_point/`` in the working folder (the repo root, where DVC runs): the code a job submits."""
    return Path.cwd() / "entry_point"


def encode_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """Return hyperparameters encoded as SDK v2's Estimator writes hyperparameters.json: every value
    ``json.dumps``-ed into a string (3 -> "3", "cnn" -> "\\"cnn\\"", False -> "false"); nulls left out.
    """
    return {key: json.dumps(value) for key, value in values.items() if value is not None}


@dataclasses.dataclass
class LocalJobResult:
    """Where a local job wrote its outputs, and how it ended."""

    exit_code: int
    base_dir: Path
    seconds: float

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def output_data_dir(self) -> Path:
        return self.base_dir / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.base_dir / "output" / "failure"

    @property
    def failure(self) -> str | None:
        """Return the failure file's text, or None if the job wrote none."""
        return self.failure_file.read_text(encoding="utf-8") if self.failure_file.is_file() else None


def lay_out(
    base_dir: Path,
    hyperparameters: Mapping[str, Any],
    channel_files: Mapping[str, Path],
    source_dir: Path,
    *,
    job_name: str = "model-lib-local",
    reuse: bool = False,
) -> None:
    """Create the SAGEMAKER_BASE_DIR tree: input/config/*.json, input/data/<channel>/<file>, empty
    code/, output/ (with data/), model/ and checkpoints/.

    ``hyperparameters`` are the already-encoded strings (see :func:`encode_hyperparameters`).

    Raises:
        SageMakerEnvironmentError: if ``base_dir`` exists and was not made by us (unless ``reuse``).
    """
    if base_dir.exists() and any(base_dir.iterdir()):
        if not (base_dir / _MARKER).exists() and not reuse:
            raise SageMakerEnvironmentError(f"{base_dir}: exists and was not made by sagemaker-local; choose another --base-dir")
        for sub in ("input", "code", "output", "model"):
            shutil.rmtree(base_dir / sub, ignore_errors=True)
    config = base_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (base_dir / _MARKER).touch()
    submitted = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": str(source_dir.resolve()),
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": job_name,
        "sagemaker_region": "us-east-1",
    }
    encoded = {**dict(hyperparameters), **{k: json.dumps(v) for k, v in submitted.items()}}
    (config / "hyperparameters.json").write_text(json.dumps(encoded, indent=2), encoding="utf-8")
    channels = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channel_files
    }
    (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2), encoding="utf-8")
    resources = {
        "current_host": "localhost",
        "hosts": ["localhost"],
        "network_interface_name": "lo",
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": ["localhost"]}],
    }
    (config / "resourceconfig.json").write_text(json.dumps(resources, indent=2), encoding="utf-8")
    for name, source in channel_files.items():
        folder = base_dir / "input" / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / source.name)
    for sub in ("code", "output/data", "model", "checkpoints"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)


def run_toolkit(
    base_dir: Path, extra_env: Mapping[str, str] | None = None, timeout: float | None = None, job_name: str = "model-lib-local"
) -> int:
    """Run the toolkit's ``train`` with SAGEMAKER_BASE_DIR=``base_dir`` in a child process; return its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        {
            "SAGEMAKER_BASE_DIR": str(base_dir.resolve()),
            "TRAINING_JOB_NAME": job_name,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
    )
    command = [sys.executable, "-c", "from sagemaker_training.cli.train import main; main()"]
    return subprocess.run(command, env=env, cwd=base_dir, timeout=timeout, check=False).returncode


def run_local(
    config: TrainConfig,
    *,
    prepared: Path = Path("data/prepared"),
    base_dir: Path = Path("sagemaker-local"),
    source_dir: Path | None = None,
    reuse: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> LocalJobResult:
    """Run one training job through the real toolkit on the ``prepare`` outputs.

    Raises:
        SageMakerEnvironmentError: if a prepared file or the source folder is missing.
    """
    files = {name: prepared / filename for name, filename in CHANNEL_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SageMakerEnvironmentError(f"{missing[0]}: not found; run `dvc repro prepare` (or model-lib prepare) first")
    source = source_dir or default_source_dir()
    if not (source / "train.py").is_file():
        raise SageMakerEnvironmentError(f"{source}: no train.py to submit; run from the repo root or pass --source-dir")
    lay_out(base_dir, encode_hyperparameters(to_dict(config)), files, source, reuse=reuse)
    started = time.perf_counter()
    code = run_toolkit(base_dir, extra_env)
    return LocalJobResult(code, base_dir, time.perf_counter() - started)
