"""The SageMaker training container contract: the only reader of SM_* variables and /opt/ml paths.

The sagemaker-training toolkit sets SM_* variables from ``/opt/ml/input/config/*.json`` before it
runs the entry point. Hyperparameters arrive three ways, all handled here:

- ``hyperparameters.json``: every value JSON-encoded by the SDK (``"3"``, ``"true"``, ``"\\"cnn\\""``);
- ``SM_HPS``: the decoded values, types kept (``{"epochs": 3, "glove_init": false}``);
- ``--key value`` arguments: ``str()`` of the decoded value, so a false boolean arrives as ``"False"``.

``"False"`` (any case) is false: only "true"/"false" spellings are booleans (see model_lib.config).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from model_lib.distributed import DEFAULT_COORDINATOR_PORT, DEFAULT_HEARTBEAT_SECONDS, Cluster
from model_lib.errors import ConfigError, SageMakerEnvironmentError
from model_lib.prepared import SPLIT_CHANNELS
from model_lib.tracking.datasets import DATA_DIGESTS_ENV, DATA_REMOTE_ENV
from model_lib.tracking.uris import REGISTER_MODEL_ENV

DEFAULT_BASE_DIR = Path("/opt/ml")
CONTAINER_CHECKPOINT_DIR = DEFAULT_BASE_DIR / "checkpoints"  # where SageMaker syncs checkpoint_s3_uri
# Override the cluster's coordinator port (sagemaker-local picks a free one) and heartbeat timeout
# (defaults: model_lib.distributed.Cluster).
# Set by `model-lib tune` in every trial's environment (the tuning job's name): a trial is known by it.
TUNING_JOB_ENV = "MODEL_LIB_TUNING_JOB"
# The hyperparameter SageMaker's tuner may add to a trial (the objective's name): not one of ours.
TUNING_OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"
COORDINATOR_PORT_ENV = "MODEL_LIB_COORDINATOR_PORT"
HEARTBEAT_SECONDS_ENV = "MODEL_LIB_HEARTBEAT_SECONDS"


class _SageMakerCluster(Cluster):
    """A :class:`Cluster` read from SM_* variables: a bad value is reported by its variable's name."""

    FIELD_NAMES: ClassVar[Mapping[str, str]] = {
        "hosts": "SM_HOSTS",
        "current_host": "SM_CURRENT_HOST",
        "coordinator_port": COORDINATOR_PORT_ENV,
        "heartbeat_seconds": HEARTBEAT_SECONDS_ENV,
    }


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the container's /opt/ml, or SAGEMAKER_BASE_DIR where set (local process mode)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)


def decode_hyperparameter(value: Any) -> Any:
    """Return a hyperparameter as the SDK meant it: JSON-decoded where it is a JSON string.

    ``"3"`` -> 3, ``"\\"cnn\\""`` -> "cnn", ``"false"`` -> False; a string that is not JSON (``"cnn"``,
    ``"False"``) stays a string, and the config turns "False" into False.
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _platform_key(key: str) -> bool:
    """Whether hyperparameter ``key`` is SageMaker's (the SDK's ``sagemaker_*``, the tuner's objective), not ours."""
    return key.startswith("sagemaker_") or key == TUNING_OBJECTIVE_HYPERPARAMETER


def user_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``values`` decoded, without SageMaker's own entries (``sagemaker_*``, ``_tuning_objective_metric``)."""
    return {k: decode_hyperparameter(v) for k, v in values.items() if not _platform_key(k)}


@dataclasses.dataclass(frozen=True)
class Channel:
    """One input channel: its folder and the files in it (any names: DVC names objects by hash).

    A channel of one DVC file output holds that one file (:attr:`file`). A channel of a DVC directory
    output holds the directory's objects (a ManifestFile channel: each at ``<md5[:2]>/<md5[2:]>``,
    see model_lib.sagemaker.launch), so the training side gets the folder (:meth:`input_path`) and
    finds every file in it (:attr:`files`): names carry nothing.
    """

    name: str
    folder: Path

    @property
    def files(self) -> list[Path]:
        """Return every regular file under the channel folder, recursively, sorted; hidden ones
        (a name starting with ".", or under such a folder) are skipped.

        Raises:
            SageMakerEnvironmentError: if the folder is missing or holds no file.
        """
        if not self.folder.is_dir():
            raise SageMakerEnvironmentError(f"channel {self.name!r}: folder {self.folder} does not exist")
        files = sorted(
            path
            for path in self.folder.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.folder).parts)
        )
        if not files:
            raise SageMakerEnvironmentError(
                f"channel {self.name!r}: {self.folder} is empty; expected one file (a directory channel: its files)"
            )
        return files

    @property
    def file(self) -> Path:
        """Return the one file in the channel folder.

        Raises:
            SageMakerEnvironmentError: if the folder is missing, empty or holds several files.
        """
        files = self.files
        if len(files) > 1:
            names = ", ".join(p.relative_to(self.folder).as_posix() for p in files[:5])
            raise SageMakerEnvironmentError(
                f"channel {self.name!r}: {self.folder} holds {len(files)} files ({names}); expected one "
                f"(a DVC directory channel is named in {DATA_DIGESTS_ENV} by the launcher)"
            )
        return files[0]

    def input_path(self, directory: bool) -> Path:
        """Return what training reads for this channel: the folder if it is a ``directory`` channel
        (its files checked to be there), else its one file.

        Raises:
            SageMakerEnvironmentError: if the folder is missing or empty or (a one-file channel) holds several files.
        """
        if not directory:
            return self.file
        self.files  # noqa: B018  # raises for a missing or empty folder, as a one-file channel does
        return self.folder


@dataclasses.dataclass(frozen=True)
class SageMakerEnvironment:
    """Everything a training job reads from its container, typed."""

    hyperparameters: dict[str, Any]
    channels: dict[str, Channel]
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    hosts: list[str]
    current_host: str
    num_gpus: int
    job_name: str | None
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI, set at launch
    register_model: str | None = None  # MODEL_LIB_REGISTER_MODEL, set at launch (--register-model)
    coordinator_port: int = DEFAULT_COORDINATOR_PORT  # MODEL_LIB_COORDINATOR_PORT
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS  # MODEL_LIB_HEARTBEAT_SECONDS
    data_remote: str | None = None  # MODEL_LIB_DATA_REMOTE, set at launch: the DVC remote the channels came from
    # MODEL_LIB_DATA_DIGESTS, set at launch: {channel: DVC .dir md5} of the channels that are DVC directory outputs
    data_digests: dict[str, str] = dataclasses.field(default_factory=dict)
    tuning_job: str | None = None  # MODEL_LIB_TUNING_JOB: the tuning job this job is a trial of

    @property
    def cluster(self) -> Cluster:
        """Return the job's hosts as this process sees them.

        Raises:
            SageMakerEnvironmentError: if the current host is not among the hosts, or they repeat.
        """
        try:
            return _SageMakerCluster(
                hosts=tuple(self.hosts),
                current_host=self.current_host,
                gpus_per_host=self.num_gpus,
                coordinator_port=self.coordinator_port,
                heartbeat_seconds=self.heartbeat_seconds,
            )
        except ConfigError as exc:
            raise SageMakerEnvironmentError(str(exc)) from None

    @property
    def tracking_configured(self) -> bool:
        """Return whether the job was launched with an MLflow tracking URI."""
        return bool(self.tracking_uri)

    def channel(self, name: str) -> Channel:
        """Return channel ``name``.

        Raises:
            SageMakerEnvironmentError: if the job was started without it.
        """
        if name not in self.channels:
            have = ", ".join(sorted(self.channels)) or "none"
            raise SageMakerEnvironmentError(
                f"channel {name!r} is missing (SM_CHANNEL_{name.upper()} not set); channels given: {have}"
            )
        return self.channels[name]

    def channel_input(self, name: str) -> Path:
        """Return what training reads for channel ``name``: its folder for a split (a folder of parts
        by the channel contract, :data:`model_lib.prepared.SPLIT_CHANNELS`) or another directory
        channel (named in :attr:`data_digests`), else its one file.

        Raises:
            SageMakerEnvironmentError: if the job was started without it, or its folder is missing or empty.
        """
        return self.channel(name).input_path(name in SPLIT_CHANNELS or name in self.data_digests)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> SageMakerEnvironment:
        """Return the environment described by SM_* variables (and ``--key value`` arguments).

        Raises:
            SageMakerEnvironmentError: naming each required variable that is missing or malformed.
        """
        environ = dict(os.environ if environ is None else environ)
        root = base_dir(environ)
        missing = [name for name in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR") if not environ.get(name)]
        if missing:
            raise SageMakerEnvironmentError(
                f"{', '.join(missing)} not set: run under the sagemaker-training toolkit, or pass them to "
                "docker run (-e SM_MODEL_DIR=/opt/ml/model -e SM_OUTPUT_DATA_DIR=/opt/ml/output/data "
                "-e SM_CHANNEL_TRAIN=... for each channel)"
            )
        given = _json_env(environ, "SM_HPS", {}, dict, "a JSON object of hyperparameters")
        hyperparameters = user_hyperparameters(given)
        hyperparameters.update(_hyperparameter_args(argv or []))
        training_env = _json_env(environ, "SM_TRAINING_ENV", {}, dict, "a JSON object")
        job_name = training_env.get("job_name") or environ.get("TRAINING_JOB_NAME")
        hosts = _json_env(environ, "SM_HOSTS", ["localhost"])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise SageMakerEnvironmentError(f"SM_HOSTS: expected a JSON list of host names, got {environ.get('SM_HOSTS')!r}")
        return cls(
            hyperparameters=hyperparameters,
            channels=_channels(environ),
            model_dir=Path(environ["SM_MODEL_DIR"]),
            output_data_dir=Path(environ["SM_OUTPUT_DATA_DIR"]),
            checkpoint_dir=_checkpoint_dir(root, job_name if environ.get(TUNING_JOB_ENV) else None),
            hosts=list(hosts),
            current_host=environ.get("SM_CURRENT_HOST", "localhost"),
            num_gpus=_int_env(environ, "SM_NUM_GPUS", 0),
            job_name=job_name,
            tracking_uri=environ.get("MLFLOW_TRACKING_URI") or None,
            register_model=environ.get(REGISTER_MODEL_ENV) or None,
            coordinator_port=_int_env(environ, COORDINATOR_PORT_ENV, DEFAULT_COORDINATOR_PORT),
            heartbeat_seconds=_int_env(environ, HEARTBEAT_SECONDS_ENV, DEFAULT_HEARTBEAT_SECONDS),
            data_remote=environ.get(DATA_REMOTE_ENV) or None,
            data_digests=_data_digests(environ),
            tuning_job=environ.get(TUNING_JOB_ENV) or None,
        )


def _checkpoint_dir(root: Path, trial: str | None) -> Path:
    """Return the checkpoint folder: <base dir>/checkpoints, or for a tuning ``trial`` its own subfolder.

    Every trial of a tuning job shares the one CheckpointConfig of its definition, so each keeps its
    checkpoints (and its MLflow run id) under its job name, which a spot restart keeps: a trial never
    resumes another's state, and a restarted trial finds its own.
    """
    folder = root / CONTAINER_CHECKPOINT_DIR.name
    return folder / trial if trial else folder


def output_dir_for_failure(environ: Mapping[str, str] | None = None) -> Path:
    """Return where the failure file goes: SM_OUTPUT_DIR, else <base dir>/output."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("SM_OUTPUT_DIR") or base_dir(environ) / "output")


def _json_env(environ: Mapping[str, str], name: str, default: Any, kind: type | None = None, expected: str = "") -> Any:
    """Return the JSON value of variable ``name`` (``default`` when unset or empty).

    Raises:
        SageMakerEnvironmentError: if it is not JSON, or (with ``kind``) not a ``kind``: ``expected``.
    """
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        raise SageMakerEnvironmentError(f"{name}: expected JSON, got {raw[:80]!r}") from None
    if kind is not None and not isinstance(value, kind):
        raise SageMakerEnvironmentError(f"{name}: expected {expected}, got {raw[:80]!r}")
    return value


def _data_digests(environ: Mapping[str, str]) -> dict[str, str]:
    """Return MODEL_LIB_DATA_DIGESTS ({} when unset).

    Raises:
        SageMakerEnvironmentError: unless it is a JSON object of channel names to digests.
    """
    digests = _json_env(environ, DATA_DIGESTS_ENV, {}, dict, "a JSON object of channel names to DVC .dir md5s")
    if not all(isinstance(value, str) for value in digests.values()):
        raise SageMakerEnvironmentError(f"{DATA_DIGESTS_ENV}: expected string digests, got {environ[DATA_DIGESTS_ENV][:80]!r}")
    return {str(name): value for name, value in digests.items()}


def _int_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SageMakerEnvironmentError(f"{name}: expected an integer, got {raw!r}") from None


def _channels(environ: Mapping[str, str]) -> dict[str, Channel]:
    expected = "a JSON list of channel names"
    names = _json_env(environ, "SM_CHANNELS", None, list, expected)
    if names is not None and not all(isinstance(name, str) and name for name in names):
        raise SageMakerEnvironmentError(f"SM_CHANNELS: expected {expected}, got {environ['SM_CHANNELS'][:80]!r}")
    if names is None:
        names = [k[len("SM_CHANNEL_") :].lower() for k in environ if k.startswith("SM_CHANNEL_")]
    channels = {}
    for name in names:
        folder = environ.get(f"SM_CHANNEL_{name.upper()}")
        if folder:
            channels[name] = Channel(name, Path(folder))
    return channels


def _hyperparameter_args(argv: list[str]) -> dict[str, Any]:
    """Return ``--key value`` pairs as a dict (values stay strings; the config types them).

    Raises:
        SageMakerEnvironmentError: for an argument that is not ``--key value``.
    """
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or i + 1 >= len(argv):
            raise SageMakerEnvironmentError(f"arguments: expected --key value pairs, got {argv[i : i + 2]}")
        values[key[2:].replace("-", "_")] = argv[i + 1]
        i += 2
    return {k: v for k, v in values.items() if not _platform_key(k)}
