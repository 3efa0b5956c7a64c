"""A recorded training job (DescribeTrainingJob) run on this machine exactly as SageMaker would run it.

Each channel's S3 data is downloaded into ``input/data/<channel>/`` (an S3Prefix's objects, or those
a ManifestFile lists, each at its key relative to the prefix); hyperparameters.json (as
recorded), inputdataconfig.json and resourceconfig.json are written; ``checkpoint_s3_uri`` is
restored into ``checkpoints/`` and mirrored back while the job runs; the toolkit runs (it fetches the
submitted code from S3 itself); on success ``model.tar.gz`` goes to ``<S3OutputPath>/<job>/output/``.

A job with InstanceCount N > 1 runs on N local hosts (:mod:`model_lib.sagemaker.local`): every host
gets the channels and the restored checkpoints, as on SageMaker (a ShardedByS3Key channel: the host's
share of its objects, :func:`channels.host_share` by the host's place in the job's host list); the
coordinator's checkpoint folder is mirrored (the only one written) and its model/ becomes model.tar.gz.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.errors import SageMakerEnvironmentError
from model_lib.sagemaker import jobs
from model_lib.sagemaker.basedir import (
    LocalJobResult,
    channel_dir,
    checkpoint_dir,
    claim_base_dir,
    host_base_dirs,
    job_hosts,
    write_job_config,
)
from model_lib.sagemaker.channels import DEFAULT_DISTRIBUTION, SHARDED_DISTRIBUTION
from model_lib.sagemaker.local import start_hosts
from model_lib.sagemaker.s3sync import CheckpointMirror, download_manifest, download_prefix, upload_folder_archive
from model_lib.sagemaker.supervise import job_exit_code, signal_group, wait_for_jobs

logger = logging.getLogger(__name__)


def run_recorded_job(
    job_name: str,
    boto_session: Any,
    *,
    base_dir: Path = Path("sagemaker-local"),
    interrupt_after: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    sync_seconds: float = 2.0,
) -> LocalJobResult:
    """Run the recorded training job ``job_name`` here as SageMaker would (see the module docstring);
    return how it ended. ``interrupt_after`` sends SIGTERM after that many seconds, as a spot
    reclaim does: the next call resumes from the S3 checkpoints.

    Raises:
        SageMakerEnvironmentError: if the job is unknown or a channel's data cannot be downloaded.
    """
    s3 = boto_session.client("s3")
    job = _recorded(boto_session, job_name)
    hosts = job_hosts(int(job.get("ResourceConfig", {}).get("InstanceCount", 1)))
    folders = host_base_dirs(base_dir, hosts)
    for host, folder in folders.items():
        _prepare_host(job, s3, folder, hosts, host)
    env = {**job.get("Environment", {}), **(extra_env or {})}
    started = time.perf_counter()
    with _mirrored(job, s3, checkpoint_dir(base_dir), sync_seconds):
        code = _run_hosts(folders, env, job_name, interrupt_after)
    result = LocalJobResult(code, base_dir, time.perf_counter() - started)
    if code == 0:
        upload_folder_archive(s3, result.model_dir, base_dir / "model.tar.gz", f"{jobs.output_uri(job)}/model.tar.gz")
    return result


def _recorded(boto_session: Any, job_name: str) -> dict[str, Any]:
    """Return DescribeTrainingJob of ``job_name``.

    Raises:
        SageMakerEnvironmentError: if SageMaker does not know it (or refuses to say).
    """
    from botocore.exceptions import ClientError

    try:
        job = jobs.describe(boto_session.client("sagemaker"), job_name)
    except ClientError as exc:
        raise SageMakerEnvironmentError(f"training job {job_name!r}: {exc}") from None
    if job is None:
        raise SageMakerEnvironmentError(f"training job {job_name!r}: no such job")
    return job


def _prepare_host(job: Mapping[str, Any], s3: Any, folder: Path, hosts: list[str], host: str) -> None:
    """Lay out ``host``'s base dir for ``job``: channels from S3 (of a ShardedByS3Key channel, the share
    of host ``host``'s place in ``hosts``), the job's config files, restored checkpoints.

    Raises:
        SageMakerEnvironmentError: if a channel's S3 data (or this host's share of it) holds nothing.
    """
    claim_base_dir(folder, reuse=False, keep=())  # the checkpoints come from checkpoint_s3_uri
    channels = {}
    job_mode = job.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
    for channel in job.get("InputDataConfig", []):
        name, source = channel["ChannelName"], channel["DataSource"]["S3DataSource"]
        distribution = source.get("S3DataDistributionType", DEFAULT_DISTRIBUTION)
        channels[name] = {
            # FastFile streams the same files SageMaker would download: here they are downloaded.
            "TrainingInputMode": channel.get("InputMode", job_mode),
            "S3DistributionType": distribution,
        }
        share = (hosts.index(host), len(hosts)) if distribution == SHARDED_DISTRIBUTION else None
        download = download_manifest if source.get("S3DataType") == "ManifestFile" else download_prefix
        if download(s3, source["S3Uri"], channel_dir(folder, name), share) == 0:
            whose = f" for host {share[0] + 1} of {share[1]} ({SHARDED_DISTRIBUTION})" if share else ""
            raise SageMakerEnvironmentError(f"channel {name!r}: nothing at {source['S3Uri']}{whose}")
    instance_type = job.get("ResourceConfig", {}).get("InstanceType", "local")
    write_job_config(folder, job.get("HyperParameters", {}), channels, instance_type, hosts=hosts, current_host=host)
    checkpoint_uri = job.get("CheckpointConfig", {}).get("S3Uri")
    if checkpoint_uri:
        restored = download_prefix(s3, checkpoint_uri, checkpoint_dir(folder))
        logger.info("%s: restored %d checkpoint files from %s", host, restored, checkpoint_uri)


def _mirrored(job: Mapping[str, Any], s3: Any, folder: Path, seconds: float) -> contextlib.AbstractContextManager[Any]:
    """Return the context that mirrors ``folder`` to the job's checkpoint URI (nothing when it has none)."""
    uri = job.get("CheckpointConfig", {}).get("S3Uri")
    return CheckpointMirror(s3, folder, uri, seconds) if uri else contextlib.nullcontext()


def _run_hosts(folders: Mapping[str, Path], env: Mapping[str, str], job_name: str, interrupt_after: float | None) -> int:
    """Run one toolkit per host to the end; return the job's exit code. ``interrupt_after``: SIGTERM
    to every host's processes after that many seconds (a spot reclaim)."""
    processes = start_hosts(folders, env, job_name)
    timer = None
    if interrupt_after is not None:
        timer = threading.Timer(interrupt_after, _reclaim, args=(processes,))
        timer.start()
    try:
        return job_exit_code(wait_for_jobs(processes))
    finally:
        if timer is not None:
            timer.cancel()


def _reclaim(processes: list[subprocess.Popen[bytes]]) -> None:
    logger.warning("sending SIGTERM to the job (as a spot reclaim does)")
    for process in processes:
        signal_group(process.pid, signal.SIGTERM)
