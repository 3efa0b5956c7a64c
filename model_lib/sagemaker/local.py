"""Local process mode: the real sagemaker-training toolkit on this machine, no Docker.

Lays out a SAGEMAKER_BASE_DIR the way a training container sees /opt/ml and runs the toolkit's
``train`` in a child process, with the entry point folder as the submitted code. Traps found here
(see DESIGN.md): output/ must exist or a failing script exits 0 without a failure file; the host must
be "localhost" (other names wait on DNS for minutes); code/ must stay empty or the submitted code is
ignored; a requirements.txt in the source folder is pip-installed (ours has none).

Several instances (``instance_count`` N > 1): N toolkits, one per host, each with its own base dir
and an N-host resourceconfig.json whose host names are the loopback addresses 127.0.0.1 ..
127.0.0.N. The toolkit waits until every host name resolves (up to 15 minutes for a name DNS does
not know); an IP literal resolves to itself without DNS or /etc/hosts, and Linux answers on the
whole of 127.0.0.0/8. The first host (the coordinator) uses ``base_dir`` itself, so its outputs are
where a one-host job puts them; the others use ``base_dir/hosts/<address>``. The job's environment
gets KERAS_BACKEND=jax (as ``model-lib launch`` sets it) and a free coordinator port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.config import TrainConfig, to_dict
from model_lib.errors import SageMakerEnvironmentError
from model_lib.prepared import channel_paths

logger = logging.getLogger(__name__)

_MARKER = ".model-lib-sagemaker-local"
_WORKERS = "hosts"  # under the coordinator's base dir: one base dir per other host
# Seconds a job may take to stop after a forwarded SIGTERM before it is killed.
STOP_GRACE_SECONDS = 60.0


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


def loopback_hosts(count: int) -> list[str]:
    """Return the host names of a local ``count``-host job: 127.0.0.1 .. 127.0.0.<count>.

    Raises:
        SageMakerEnvironmentError: if ``count`` is not 1..254.
    """
    if not 1 <= count <= 254:
        raise SageMakerEnvironmentError(f"instance_count: expected 1..254 local hosts, got {count}")
    return [f"127.0.0.{i}" for i in range(1, count + 1)]


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
    job_name: str = "model-lib-local",
    reuse: bool = False,
    hosts: list[str] | None = None,
    current_host: str | None = None,
) -> None:
    """Create the SAGEMAKER_BASE_DIR tree: input/config/*.json, input/data/<channel>/<file>, empty
    code/, output/ (with data/), model/ and checkpoints/.

    ``hyperparameters`` are the already-encoded strings (see :func:`encode_hyperparameters`).
    ``hosts`` and ``current_host`` go to resourceconfig.json (default: one host, "localhost").

    Raises:
        SageMakerEnvironmentError: if ``base_dir`` exists and was not made by us (unless ``reuse``).
    """
    _claim_base_dir(base_dir, reuse=reuse, keep=("checkpoints",))
    submitted = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": str(source_dir.resolve()),
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": job_name,
        "sagemaker_region": "us-east-1",
    }
    encoded = {**dict(hyperparameters), **{k: json.dumps(v) for k, v in submitted.items()}}
    channels = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channel_files
    }
    _write_job_config(base_dir, encoded, channels, "local", hosts=hosts, current_host=current_host)
    for name, source in channel_files.items():
        folder = base_dir / "input" / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / source.name)


def _claim_base_dir(base_dir: Path, *, reuse: bool, keep: tuple[str, ...]) -> Path:
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


def _write_job_config(
    base_dir: Path,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, Any],
    instance_type: str,
    *,
    hosts: list[str] | None = None,
    current_host: str | None = None,
) -> None:
    """Write input/config/*.json as the toolkit reads them (default one host, "localhost") and the job's folders."""
    hosts = hosts or ["localhost"]
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


def start_toolkit(
    base_dir: Path, extra_env: Mapping[str, str] | None = None, job_name: str = "model-lib-local"
) -> subprocess.Popen[bytes]:
    """Start the toolkit's ``train`` with SAGEMAKER_BASE_DIR=``base_dir`` as the leader of a new
    process group (the job's processes, as a container holds them); return the process."""
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
    return subprocess.Popen(command, env=env, cwd=base_dir, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a process of another user reused the id
        return True
    return True


def wait_for_job(process: subprocess.Popen[bytes], timeout: float | None = None, grace: float = STOP_GRACE_SECONDS) -> int:
    """Wait for a job started by :func:`start_toolkit`, passing SIGTERM and SIGINT on to all of its
    processes, as SageMaker (and ``tini -g`` in the image) does; return the toolkit's exit code
    (128 + N when signal N ended it).

    The toolkit's ``train`` dies at once on SIGTERM while its child, the training script, saves its
    state: the wait lasts until every process of the job has exited, at most ``grace`` seconds after
    a forwarded signal, then the rest are killed (SIGKILL), as SageMaker does after its stop timeout.

    Raises:
        subprocess.TimeoutExpired: if the job runs longer than ``timeout`` (its processes are killed).
    """
    return wait_for_jobs([process], timeout, grace)[0]


def wait_for_jobs(
    processes: list[subprocess.Popen[bytes]], timeout: float | None = None, grace: float = STOP_GRACE_SECONDS
) -> list[int]:
    """Wait for the toolkits of one job's hosts as :func:`wait_for_job` waits for one (signals go to
    every host's processes); return their exit codes in the same order.

    Raises:
        subprocess.TimeoutExpired: if the job runs longer than ``timeout`` (its processes are killed).
    """
    forwarded: list[float] = []

    def forward(signum: int, frame: types.FrameType | None) -> None:
        logger.warning("%s: passing it on to the job's processes", signal.Signals(signum).name)
        forwarded.append(time.monotonic())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while any(p.poll() is None or _group_alive(p.pid) for p in processes):
            now = time.monotonic()
            if (deadline is not None and now > deadline) or (forwarded and now > forwarded[0] + grace):
                for process in processes:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                if deadline is not None and now > deadline:
                    raise subprocess.TimeoutExpired(processes[0].args, timeout or 0)
                break
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return [128 - p.returncode if p.returncode < 0 else p.returncode for p in processes]


def job_exit_code(codes: list[int]) -> int:
    """Return a multi-host job's exit code: 0 when every host succeeded, else the first host's
    failure (the coordinator's), else the first failing host's, as SageMaker fails a job when any
    host fails."""
    return next((code for code in codes if code != 0), 0)


def cluster_env(hosts: list[str], extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a local job on ``hosts``: ``extra_env``, plus for several hosts
    KERAS_BACKEND=jax (unless given) and a free MODEL_LIB_COORDINATOR_PORT (unless given)."""
    env = dict(extra_env or {})
    if len(hosts) > 1:
        import socket

        env.setdefault("KERAS_BACKEND", "jax")
        if "MODEL_LIB_COORDINATOR_PORT" not in env:
            with socket.socket() as sock:
                sock.bind((hosts[0], 0))
                env["MODEL_LIB_COORDINATOR_PORT"] = str(sock.getsockname()[1])
    return env


def start_hosts(
    base_dirs: Mapping[str, Path], extra_env: Mapping[str, str] | None = None, job_name: str = "model-lib-local"
) -> list[subprocess.Popen[bytes]]:
    """Start one toolkit per host (see :func:`start_toolkit`), in the order of ``base_dirs``; return them."""
    env = cluster_env(list(base_dirs), extra_env)
    return [start_toolkit(folder, env, job_name) for folder in base_dirs.values()]


def run_toolkit(
    base_dir: Path, extra_env: Mapping[str, str] | None = None, timeout: float | None = None, job_name: str = "model-lib-local"
) -> int:
    """Run the toolkit's ``train`` with SAGEMAKER_BASE_DIR=``base_dir``; return its exit code (see :func:`wait_for_job`)."""
    return wait_for_job(start_toolkit(base_dir, extra_env, job_name), timeout)


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
    coordinator's folders; the exit code is the job's, see :func:`job_exit_code`).

    Raises:
        SageMakerEnvironmentError: if a prepared file or the source folder is missing, or
            ``instance_count`` is not 1..254.
        subprocess.TimeoutExpired: if the job runs longer than ``timeout``.
    """
    files = channel_paths(prepared)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SageMakerEnvironmentError(f"{missing[0]}: not found; run `dvc repro prepare` (or model-lib prepare) first")
    source = source_dir or default_source_dir()
    if not (source / "train.py").is_file():
        raise SageMakerEnvironmentError(f"{source}: no train.py to submit; run from the repo root or pass --source-dir")
    hosts = loopback_hosts(instance_count) if instance_count != 1 else ["localhost"]  # 0 or 255+: refused there
    folders = host_base_dirs(base_dir, hosts)
    hyperparameters = encode_hyperparameters(to_dict(config))
    for host, folder in folders.items():
        lay_out(folder, hyperparameters, files, source, reuse=reuse, hosts=hosts, current_host=host)
    started = time.perf_counter()
    codes = wait_for_jobs(start_hosts(folders, extra_env), timeout)
    return LocalJobResult(job_exit_code(codes), base_dir, time.perf_counter() - started)


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _download_prefix(s3: Any, uri: str, folder: Path) -> int:
    """Download the object ``uri`` or every object under the prefix ``uri`` into ``folder``; return the count."""
    bucket, key = _s3_parts(uri)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            relative = item["Key"][len(key) :].lstrip("/") or Path(item["Key"]).name
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            count += 1
    return count


class _CheckpointSync:
    """Mirrors a local checkpoint folder to ``checkpoint_s3_uri`` while the job runs, as SageMaker
    does: new and changed files are uploaded, files gone from the folder are deleted in S3."""

    def __init__(self, s3: Any, folder: Path, uri: str, seconds: float) -> None:
        self.s3, self.folder, self.seconds = s3, folder, seconds
        self.bucket, self.prefix = _s3_parts(uri if uri.endswith("/") else uri + "/")
        self._sent: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)

    def _files(self) -> dict[str, Path]:
        # Temporary folders of a write in progress are not synced (SageMaker would upload them as they are).
        return {
            str(p.relative_to(self.folder)): p
            for p in self.folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.folder).parts)
        }

    def sync(self) -> None:
        files = self._files()
        for name, path in files.items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            if self._sent.get(name) != signature:
                with contextlib.suppress(FileNotFoundError):
                    self.s3.upload_file(str(path), self.bucket, self.prefix + name)
                    self._sent[name] = signature
        for name in set(self._sent) - set(files):
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + name)
            del self._sent[name]

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.sync()
            except Exception as exc:  # a failed upload is tried again at the next round
                logger.warning("checkpoint sync: %s", exc)

    def __enter__(self) -> _CheckpointSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()


def _tar_gz(folder: Path, target: Path) -> None:
    import tarfile

    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=path.name)


def run_recorded_job(
    job_name: str,
    boto_session: Any,
    *,
    base_dir: Path = Path("sagemaker-local"),
    interrupt_after: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    sync_seconds: float = 2.0,
) -> LocalJobResult:
    """Run a recorded training job here exactly as SageMaker would run it.

    Reads DescribeTrainingJob; downloads each channel's S3 data into ``input/data/<channel>/``;
    writes hyperparameters.json (as recorded), inputdataconfig.json and resourceconfig.json; restores
    ``checkpoint_s3_uri`` into ``checkpoints/`` and mirrors it back while the job runs; runs the
    toolkit (which fetches the submitted code from S3 itself); on success uploads ``model.tar.gz`` to
    ``<S3OutputPath>/<job>/output/``. ``interrupt_after`` sends SIGTERM after that many seconds,
    as a spot reclaim does: the next call resumes from the S3 checkpoints.

    A job with InstanceCount N > 1 runs on N local hosts (see the module docstring): every host
    gets the channels and the restored checkpoints, as on SageMaker; the coordinator's checkpoint
    folder is mirrored (the only one written) and its model/ becomes model.tar.gz.

    Raises:
        SageMakerEnvironmentError: if the job is unknown or a channel's data cannot be downloaded.
    """
    from botocore.exceptions import ClientError

    sagemaker_client, s3 = boto_session.client("sagemaker"), boto_session.client("s3")
    try:
        job = sagemaker_client.describe_training_job(TrainingJobName=job_name)
    except ClientError as exc:
        raise SageMakerEnvironmentError(f"training job {job_name!r}: {exc}") from None
    count = int(job.get("ResourceConfig", {}).get("InstanceCount", 1))
    hosts = loopback_hosts(count) if count > 1 else ["localhost"]
    folders = host_base_dirs(base_dir, hosts)
    instance_type = job.get("ResourceConfig", {}).get("InstanceType", "local")
    checkpoint_uri = job.get("CheckpointConfig", {}).get("S3Uri")
    for host, folder in folders.items():
        _claim_base_dir(folder, reuse=False, keep=())  # the checkpoints come from checkpoint_s3_uri
        channels = {}
        for channel in job.get("InputDataConfig", []):
            name, source = channel["ChannelName"], channel["DataSource"]["S3DataSource"]
            channels[name] = {
                "TrainingInputMode": "File",
                "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
            }
            if _download_prefix(s3, source["S3Uri"], folder / "input" / "data" / name) == 0:
                raise SageMakerEnvironmentError(f"channel {name!r}: nothing at {source['S3Uri']}")
        _write_job_config(folder, job.get("HyperParameters", {}), channels, instance_type, hosts=hosts, current_host=host)
        if checkpoint_uri:
            restored = _download_prefix(s3, checkpoint_uri, folder / "checkpoints")
            logger.info("%s: restored %d checkpoint files from %s", host, restored, checkpoint_uri)
    env = {**job.get("Environment", {}), **(extra_env or {})}

    started = time.perf_counter()
    with (
        _CheckpointSync(s3, base_dir / "checkpoints", checkpoint_uri, sync_seconds)
        if checkpoint_uri
        else contextlib.nullcontext()
    ):
        processes = start_hosts(folders, env, job_name)
        timer = None
        if interrupt_after is not None:

            def reclaim() -> None:
                for process in processes:
                    _signal_group(process.pid, signal.SIGTERM)

            timer = threading.Timer(interrupt_after, reclaim)
            timer.start()
        try:
            code = job_exit_code(wait_for_jobs(processes))
        finally:
            if timer is not None:
                timer.cancel()
    result = LocalJobResult(code, base_dir, time.perf_counter() - started)
    output = f"{job['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output"
    if code == 0:
        _tar_gz(result.model_dir, base_dir / "model.tar.gz")
        s3.upload_file(str(base_dir / "model.tar.gz"), *_s3_parts(f"{output}/model.tar.gz"))
    # The stand-in's record of how this run ended (a real job's status is SageMaker's own).
    status = "Completed" if code == 0 else ("Stopped" if code == 128 + signal.SIGTERM else "Failed")
    record = {"status": status, "exit_code": code, "seconds": round(result.seconds, 1), "failure": result.failure}
    s3.put_object(Body=json.dumps(record, indent=2).encode(), **dict(zip(("Bucket", "Key"), _s3_parts(f"{output}/status.json"))))
    return result


def _signal_group(pgid: int, signum: int) -> None:
    logger.warning("sending %s to the job (as a spot reclaim does)", signal.Signals(signum).name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
