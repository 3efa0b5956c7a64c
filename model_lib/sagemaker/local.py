"""Local process mode: the real sagemaker-training toolkit on this machine, no Docker.

Lays out a SAGEMAKER_BASE_DIR per host (:mod:`model_lib.sagemaker.basedir`) on the ``prepare``
outputs and runs the toolkit's ``train`` in a child process per host
(:mod:`model_lib.sagemaker.supervise`), with the entry point folder as the submitted code. A
requirements.txt in the source folder would be pip-installed (ours has none).

Several instances (``instance_count`` N > 1): N toolkits, one per host, each with its own base dir
and an N-host resourceconfig.json whose host names are the loopback addresses 127.0.0.1 ..
127.0.0.N (see :func:`basedir.loopback_hosts`), and of a ShardedByS3Key channel only the host's share
(:func:`basedir.lay_out`). The job's environment gets KERAS_BACKEND=jax (as
``model-lib launch`` sets it) and a free coordinator port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from model_lib.config import TrainConfig, to_dict
from model_lib.errors import SageMakerEnvironmentError
from model_lib.prepared import channel_paths
from model_lib.sagemaker.basedir import LocalJobResult, encode_hyperparameters, host_base_dirs, job_hosts, lay_out
from model_lib.sagemaker.environment import COORDINATOR_PORT_ENV
from model_lib.sagemaker.launch import MULTI_INSTANCE_BACKEND
from model_lib.sagemaker.supervise import DEFAULT_JOB_NAME, job_exit_code, start_toolkit, wait_for_jobs
from model_lib.tracking.datasets import DATA_DIGESTS_ENV, DATA_REMOTE_ENV, DataOrigin, object_exists, object_uri
from model_lib.tracking.lineage import dir_entries, dir_md5, file_md5


def default_source_dir() -> Path:
    """Return ``entry_point/`` in the working folder (the repo root, where DVC runs): the code a job submits."""
    return Path.cwd() / "entry_point"


def cluster_env(hosts: list[str], extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a local job on ``hosts``: ``extra_env``, plus for several hosts
    KERAS_BACKEND=jax (unless given) and a free coordinator port (unless given)."""
    env = dict(extra_env or {})
    if len(hosts) > 1:
        env.setdefault("KERAS_BACKEND", MULTI_INSTANCE_BACKEND)
        if COORDINATOR_PORT_ENV not in env:
            with socket.socket() as sock:
                sock.bind((hosts[0], 0))
                env[COORDINATOR_PORT_ENV] = str(sock.getsockname()[1])
    return env


def _objects(path: Path) -> list[str]:
    """Return the MD5s of the DVC objects of ``path``: a file's; a folder's ``.dir`` and each of its files'."""
    if not path.is_dir():
        return [file_md5(path)]
    return [dir_md5(path), *(entry["md5"] for entry in dir_entries(path))]


def data_digests_env(files: Mapping[str, Path]) -> dict[str, str]:
    """Return ``{MODEL_LIB_DATA_DIGESTS: {channel: .dir md5}}`` for the folders of ``files`` ({} for none):
    as ``model-lib launch`` does, it names the directory channels (laid out under their md5 names, so
    the job can neither tell nor compute them)."""
    directories = {name: dir_md5(path) for name, path in files.items() if path.is_dir()}
    return {DATA_DIGESTS_ENV: json.dumps(directories, sort_keys=True)} if directories else {}


def data_remote_env(files: Mapping[str, Path], repo: Path = Path(".")) -> dict[str, str]:
    """Return ``{MODEL_LIB_DATA_REMOTE: url}`` when ``repo``'s DVC default remote holds every object of
    ``files`` (a file's; a folder's ``.dir`` and each of its files'), as a launched job's channels are
    its objects, else {}: the job's datasets then name those objects, not the folders the files were copied to."""
    remote = DataOrigin.from_dvc_config(repo).remote
    if remote and all(object_exists(object_uri(remote, md5)) for path in files.values() for md5 in _objects(path)):
        return {DATA_REMOTE_ENV: remote}
    return {}


def start_hosts(
    base_dirs: Mapping[str, Path], extra_env: Mapping[str, str] | None = None, job_name: str = DEFAULT_JOB_NAME
) -> list[subprocess.Popen[bytes]]:
    """Start one toolkit per host (see :func:`supervise.start_toolkit`), in the order of ``base_dirs``; return them."""
    env = cluster_env(list(base_dirs), extra_env)
    return [start_toolkit(folder, env, job_name) for folder in base_dirs.values()]


def run_local(
    config: TrainConfig,
    *,
    prepared: Path = Path("data/prepared"),
    base_dir: Path = Path("sagemaker-local"),
    source_dir: Path | None = None,
    reuse: bool = False,
    extra_env: Mapping[str, str] | None = None,
    instance_count: int = 1,
    timeout: float | None = None,
) -> LocalJobResult:
    """Run one training job through the real toolkit on the ``prepare`` outputs, on
    ``instance_count`` local hosts (see the module docstring); return how it ended (the
    coordinator's folders; the exit code is the job's, see :func:`supervise.job_exit_code`).

    Raises:
        SageMakerEnvironmentError: if a prepared file or the source folder is missing, or
            ``instance_count`` is not 1..254.
        subprocess.TimeoutExpired: if the job runs longer than ``timeout``.
    """
    files = channel_paths(prepared)
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise SageMakerEnvironmentError(f"{missing[0]}: not found; run `dvc repro prepare` (or model-lib prepare) first")
    source = source_dir or default_source_dir()
    if not (source / "train.py").is_file():
        raise SageMakerEnvironmentError(f"{source}: no train.py to submit; run from the repo root or pass --source-dir")
    hosts = job_hosts(instance_count)  # 0 or 255+: refused there
    folders = host_base_dirs(base_dir, hosts)
    hyperparameters = encode_hyperparameters(to_dict(config))
    for host, folder in folders.items():
        lay_out(folder, hyperparameters, files, source, reuse=reuse, hosts=hosts, current_host=host)
    tracked = {**os.environ, **(extra_env or {})}.get("MLFLOW_TRACKING_URI")  # a job logs only then
    env = {**data_digests_env(files), **(data_remote_env(files) if tracked else {}), **(extra_env or {})}
    started = time.perf_counter()
    codes = wait_for_jobs(start_hosts(folders, env), timeout)
    return LocalJobResult(job_exit_code(codes), base_dir, time.perf_counter() - started)
