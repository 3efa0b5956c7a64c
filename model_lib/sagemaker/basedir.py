"""The layout of a SAGEMAKER_BASE_DIR: the folders and config files a training container sees under /opt/ml.

Traps found here (see DESIGN.md): output/ must exist or a failing script exits 0 without a failure
file; the host must be "localhost" or an IP literal (other names wait on DNS for minutes); code/ must
stay empty or the submitted code is ignored.

A job on several hosts has one base dir per host: the first host (the coordinator) uses the job's
base dir itself, so its outputs are where a one-host job puts them; the others use
``<base dir>/hosts/<host>``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.errors import SageMakerEnvironmentError
from model_lib.sagemaker.channels import SHARDED_DISTRIBUTION, channel_distribution, host_share
from model_lib.sagemaker.supervise import DEFAULT_JOB_NAME
from model_lib.tracking.lineage import file_md5

_MARKER = ".model-lib-sagemaker-local"
_WORKERS = "hosts"  # under the coordinator's base dir: one base dir per other host
LOCAL_HOST = "localhost"  # the one host of a one-host job (other names wait on DNS)


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


def loopback_hosts(count: int) -> list[str]:
    """Return the host names of a local ``count``-host job: 127.0.0.1 .. 127.0.0.<count>.

    An IP literal resolves to itself without DNS or /etc/hosts, and Linux answers on the whole of
    127.0.0.0/8, so the toolkit's wait for every host name to resolve ends at once.

    Raises:
        SageMakerEnvironmentError: if ``count`` is not 1..254.
    """
    if not 1 <= count <= 254:
        raise SageMakerEnvironmentError(f"instance_count: expected 1..254 local hosts, got {count}")
    return [f"127.0.0.{i}" for i in range(1, count + 1)]


def job_hosts(count: int) -> list[str]:
    """Return the host names of a local job on ``count`` hosts: "localhost" for one, else :func:`loopback_hosts`.

    Raises:
        SageMakerEnvironmentError: if ``count`` is not 1..254.
    """
    return [LOCAL_HOST] if count == 1 else loopback_hosts(count)


def host_base_dirs(base_dir: Path, hosts: list[str]) -> dict[str, Path]:
    """Return each host's SAGEMAKER_BASE_DIR: ``base_dir`` for the first (the coordinator), then
    ``base_dir/hosts/<host>``."""
    return {host: base_dir if i == 0 else base_dir / _WORKERS / host for i, host in enumerate(hosts)}


def lay_out(
    base_dir: Path,
    hyperparameters: Mapping[str, Any],
    channel_files: Mapping[str, Path],
    source_dir: Path,
    *,
    job_name: str = DEFAULT_JOB_NAME,
    reuse: bool = False,
    hosts: list[str] | None = None,
    current_host: str | None = None,
) -> None:
    """Create the SAGEMAKER_BASE_DIR tree: input/config/*.json, input/data/<channel>/<file>, empty
    code/, output/ (with data/), model/ and checkpoints/.

    ``channel_files`` maps each channel to a file or a folder (a DVC directory output); a folder's
    files are laid out as a ManifestFile channel of its DVC objects lands (:func:`channel_members`).
    Each channel's distribution is :func:`channels.channel_distribution`'s for ``len(hosts)`` hosts
    and its objects, written to inputdataconfig.json; of a ShardedByS3Key channel the host gets only
    its share (:func:`channels.host_share`, by ``current_host``'s place in ``hosts``).

    ``hyperparameters`` are the already-encoded strings (see :func:`encode_hyperparameters`).
    ``hosts`` and ``current_host`` go to resourceconfig.json (default: one host, "localhost").

    Raises:
        SageMakerEnvironmentError: if ``base_dir`` exists and was not made by us (unless ``reuse``).
    """
    claim_base_dir(base_dir, reuse=reuse, keep=("checkpoints",))
    submitted = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": str(source_dir.resolve()),
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": job_name,
        "sagemaker_region": "us-east-1",
    }
    encoded = {**dict(hyperparameters), **{k: json.dumps(v) for k, v in submitted.items()}}
    hosts = hosts or [LOCAL_HOST]
    members = {name: channel_members(source) for name, source in channel_files.items()}
    distributions = {name: channel_distribution(name, len(hosts), len(found)) for name, found in members.items()}
    channels = {
        name: {"TrainingInputMode": "File", "S3DistributionType": distribution, "RecordWrapperType": "None"}
        for name, distribution in distributions.items()
    }
    write_job_config(base_dir, encoded, channels, "local", hosts=hosts, current_host=current_host)
    host_index = hosts.index(current_host or hosts[0])
    for name, found in members.items():
        folder = channel_dir(base_dir, name)
        if distributions[name] == SHARDED_DISTRIBUTION:
            share = set(host_share((relative for _, relative in found), host_index, len(hosts)))
            found = [(path, relative) for path, relative in found if relative in share]
        for path, relative in found:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def channel_members(source: Path) -> list[tuple[Path, str]]:
    """Return (file, its path in the channel folder) of each file channel ``source`` holds: a file
    keeps its name; each file under a folder is named as its DVC object under the remote's
    files/md5/ prefix (``<md5[:2]>/<md5[2:]>``), which is where a ManifestFile channel of that
    directory puts it, so a local job reads a directory the way a SageMaker job does (names carry
    nothing). Files of the same bytes are one object: the channel holds them once."""
    if not source.is_dir():
        return [(source, source.name)]
    members: dict[str, Path] = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        md5 = file_md5(path)
        members.setdefault(f"{md5[:2]}/{md5[2:]}", path)
    return [(path, relative) for relative, path in members.items()]


def channel_dir(base_dir: Path, name: str) -> Path:
    """Return the folder of channel ``name`` in ``base_dir``."""
    return base_dir / "input" / "data" / name


def checkpoint_dir(base_dir: Path) -> Path:
    """Return the checkpoint folder of ``base_dir`` (the one SageMaker syncs with checkpoint_s3_uri)."""
    return base_dir / "checkpoints"


def claim_base_dir(base_dir: Path, *, reuse: bool, keep: tuple[str, ...]) -> Path:
    """Empty a SAGEMAKER_BASE_DIR made by us (all but ``keep``), mark it ours; return its config folder.

    Raises:
        SageMakerEnvironmentError: if ``base_dir`` holds files and was not made by us (unless ``reuse``).
    """
    if base_dir.exists() and any(base_dir.iterdir()) and not (base_dir / _MARKER).exists() and not reuse:
        raise SageMakerEnvironmentError(f"{base_dir}: exists and was not made by sagemaker-local; choose another --base-dir")
    for sub in ("input", "code", "output", "model", "checkpoints", _WORKERS):
        if sub not in keep:
            shutil.rmtree(base_dir / sub, ignore_errors=True)
    config = base_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (base_dir / _MARKER).touch()
    return config


def write_job_config(
    base_dir: Path,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, Any],
    instance_type: str,
    *,
    hosts: list[str] | None = None,
    current_host: str | None = None,
) -> None:
    """Write input/config/*.json as the toolkit reads them (default one host, "localhost") and the job's folders."""
    hosts = hosts or [LOCAL_HOST]
    config = base_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters), indent=2), encoding="utf-8")
    (config / "inputdataconfig.json").write_text(json.dumps(dict(channels), indent=2), encoding="utf-8")
    resources = {
        "current_host": current_host or hosts[0],
        "hosts": hosts,
        "network_interface_name": "lo",
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": hosts}],
    }
    (config / "resourceconfig.json").write_text(json.dumps(resources, indent=2), encoding="utf-8")
    for sub in ("code", "output/data", "model", "checkpoints"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
