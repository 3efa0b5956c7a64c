"""Data parallelism for ``training.run``: one mechanism, Keras 3's ``DataParallel`` on JAX, for
several devices of one host and for several hosts.

Why this mechanism: Keras 3 does not support TensorFlow's MultiWorkerMirroredStrategy
(keras-team/keras#20585), and ``keras.distribution.DataParallel`` on JAX covers both cases with
the same code: the model's variables are replicated on every device of every host, each process
feeds its own shard of each global batch (``auto_shard_dataset=False``: our loop shards, so the
data order stays a function of (seed, epoch)), and XLA sums the gradients across devices and hosts.
Several hosts additionally need ``jax.distributed`` (the coordinator service on the first host).

On the TensorFlow backend (the default) nothing changes: one process, one device.

Every process must run the same computations in the same order (each variable write and train step
is a collective); only the coordinator (process 0) writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from model_lib.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

# How long the processes wait for each other to start, and for the coordinator at the end (it saves
# and evaluates the model while the others wait in jax.distributed's shutdown barrier).
START_TIMEOUT_SECONDS = 300
SHUTDOWN_TIMEOUT_SECONDS = 1800


# The coordinator's port for jax.distributed (any free port works: SageMaker opens every port between
# the hosts of a job).
DEFAULT_COORDINATOR_PORT = 7777
# Seconds without a heartbeat after which a host counts as dead and the job fails (not hangs);
# jax's own default (100 s) is kept as the order of size.
DEFAULT_HEARTBEAT_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The hosts of one training job as this process sees them; a single host is the degenerate case.

    ``hosts`` keep the platform's order (SageMaker's algo-1, algo-2, ...): the first is the
    coordinator, as the sagemaker-training toolkit's own "master" is, and process ids follow the order.

    Raises:
        ConfigError: for no hosts, repeated hosts, a current host not among them, a port outside
            1..65535 or a heartbeat below 1 s; the message names the field as ``FIELD_NAMES`` says.
    """

    hosts: tuple[str, ...] = ("localhost",)
    current_host: str = "localhost"
    gpus_per_host: int = 0
    coordinator_port: int = DEFAULT_COORDINATOR_PORT
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS

    # What error messages call each field: a reader of another source (model_lib.sagemaker.environment,
    # SM_* variables) names its own, so the user reads the name of what they set.
    FIELD_NAMES: ClassVar[Mapping[str, str]] = {}

    def _name(self, field: str) -> str:
        return self.FIELD_NAMES.get(field, field)

    def __post_init__(self) -> None:
        hosts, current, port = self._name("hosts"), self._name("current_host"), self._name("coordinator_port")
        if not self.hosts:
            raise ConfigError(f"{hosts}: expected at least one host, got []")
        if len(set(self.hosts)) != len(self.hosts):
            raise ConfigError(f"{hosts}: host names must be distinct, got {list(self.hosts)}")
        if self.current_host not in self.hosts:
            raise ConfigError(f"{current}: {self.current_host!r} is not one of {hosts} {list(self.hosts)}")
        if not 0 < self.coordinator_port < 65536:
            raise ConfigError(f"{port}: expected 1..65535, got {self.coordinator_port}")
        if self.heartbeat_seconds < 1:
            raise ConfigError(f"{self._name('heartbeat_seconds')}: expected a positive integer, got {self.heartbeat_seconds}")

    @property
    def coordinator(self) -> str:
        """Return the coordinator's host name: the first host."""
        return self.hosts[0]

    @property
    def coordinator_address(self) -> str:
        """Return ``host:port`` of the jax.distributed coordinator service."""
        return f"{self.coordinator}:{self.coordinator_port}"

    @property
    def process_id(self) -> int:
        """Return this host's process id (its index in ``hosts``; 0 is the coordinator)."""
        return self.hosts.index(self.current_host)

    @property
    def num_processes(self) -> int:
        """Return the number of training processes: one per host."""
        return len(self.hosts)

    @property
    def is_coordinator(self) -> bool:
        """Return whether this host writes the model, reports, MLflow records and checkpoints."""
        return self.process_id == 0

    @property
    def multi_host(self) -> bool:
        """Return whether the job spans more than one host."""
        return len(self.hosts) > 1


@dataclasses.dataclass(frozen=True)
class Parallelism:
    """How this process takes part in training: its index among the processes and its devices."""

    process_index: int = 0
    process_count: int = 1
    local_devices: int = 1
    host: str = "localhost"

    @property
    def is_coordinator(self) -> bool:
        """Return whether this process writes the model, reports, MLflow records and checkpoints."""
        return self.process_index == 0

    @property
    def distributed(self) -> bool:
        """Return whether a Keras distribution is set (more than one device or process)."""
        return self.process_count > 1 or self.local_devices > 1


def start(cluster: Cluster | None = None) -> Parallelism:
    """Set up data parallelism for this process and return how it takes part.

    TensorFlow backend: one process on one device (a multi-host ``cluster`` is refused). JAX backend:
    ``jax.distributed`` for several hosts (once per process), then ``DataParallel`` over every device
    of every host when there is more than one.

    Raises:
        ConfigError: if ``cluster`` has several hosts and the Keras backend is not JAX.
        ClusterError: if the hosts cannot connect to the coordinator within START_TIMEOUT_SECONDS.
    """
    import keras

    backend = keras.backend.backend()
    hosts = cluster.num_processes if cluster is not None else 1
    if backend != "jax":
        if hosts > 1:
            raise ConfigError(
                f"{hosts} hosts: multi-host training needs the JAX backend (KERAS_BACKEND=jax), got {backend!r}; "
                "model-lib launch sets it for --instance-count > 1"
            )
        if cluster is not None and cluster.gpus_per_host > 1:
            logger.warning(
                "%d GPUs on this host: the %s backend trains on one; KERAS_BACKEND=jax uses all", cluster.gpus_per_host, backend
            )
        return Parallelism(host=cluster.current_host if cluster else "localhost")
    import jax

    if cluster is not None and cluster.multi_host and not jax.distributed.is_initialized():
        logger.info(
            "host %s: joining %d hosts as process %d (coordinator %s)",
            cluster.current_host, cluster.num_processes, cluster.process_id, cluster.coordinator_address,
        )  # fmt: skip
        try:
            jax.distributed.initialize(
                coordinator_address=cluster.coordinator_address,
                num_processes=cluster.num_processes,
                process_id=cluster.process_id,
                initialization_timeout=START_TIMEOUT_SECONDS,
                heartbeat_timeout_seconds=cluster.heartbeat_seconds,
                shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            raise ClusterError(
                f"host {cluster.current_host}: could not join the {cluster.num_processes} hosts at "
                f"{cluster.coordinator_address} within {START_TIMEOUT_SECONDS} s: {exc}"
            ) from exc
    parallel = Parallelism(
        jax.process_index(), jax.process_count(), jax.local_device_count(), cluster.current_host if cluster else "localhost"
    )
    if parallel.distributed:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False))
        logger.info(
            "data parallel: process %d of %d, %d local device(s), %d in all",
            parallel.process_index, parallel.process_count, parallel.local_devices, jax.device_count(),
        )  # fmt: skip
    return parallel


def finish(parallel: Parallelism) -> None:
    """Remove the Keras distribution :func:`start` set (jax.distributed stays: it lasts the process)."""
    if parallel.distributed:
        import keras

        keras.distribution.set_distribution(None)


def _padded_size(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


def host_batch(
    batch: np.ndarray, parallel: Parallelism, owners: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return this process's rows of a global ``batch`` (indices) and their sample weights.

    One process on one device: the batch itself and None (the loop feeds exactly what it fed before).
    Otherwise the batch is cut into ``process_count`` equal shards, each a multiple of the local
    device count; a batch that does not divide (an epoch's last) is padded with copies of its first
    row at weight 0, and its real rows get weight padded/real, so that the mean loss, and with it
    the gradient, is the one of the real rows (the rule Keras uses for masks).

    ``owners`` (the process holding each row of ``batch``, when each host holds some of the data:
    :mod:`model_lib.shards`) cuts the batch by owner instead: each process feeds the rows it holds,
    padded to the largest share, so the global batch holds every real row once.
    """
    if owners is not None and parallel.process_count > 1:
        return _owned_rows(batch, parallel, owners)
    if not parallel.distributed:
        return batch, None
    share = _padded_size(_padded_size(len(batch), parallel.process_count) // parallel.process_count, parallel.local_devices)
    padded = share * parallel.process_count
    weights = np.zeros(padded, dtype="float32")
    weights[: len(batch)] = padded / len(batch)
    rows = np.concatenate([batch, np.full(padded - len(batch), batch[0], dtype=batch.dtype)])
    mine = slice(parallel.process_index * share, (parallel.process_index + 1) * share)
    if padded == len(batch):
        return rows[mine], None
    return rows[mine], weights[mine]


def _owned_rows(batch: np.ndarray, parallel: Parallelism, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    counts = np.bincount(owners, minlength=parallel.process_count)
    share = _padded_size(max(int(counts.max()), 1), parallel.local_devices)
    padded = share * parallel.process_count
    mine = batch[owners == parallel.process_index]
    if padded == len(batch):  # every process holds as many rows of it: nothing to pad
        return mine, None
    filler = mine[0] if len(mine) else batch[0]  # a host that owns none feeds a row of 0 weight
    rows = np.concatenate([mine, np.full(share - len(mine), filler, dtype=batch.dtype)])
    weights = np.zeros(share, dtype="float32")
    weights[: len(mine)] = padded / len(batch)
    return rows, weights


def validation_feed(
    x: np.ndarray, y: np.ndarray, batch_size: int, parallel: Parallelism
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Return (x, y, sample weights, batch size) for ``model.evaluate`` of the validation slice.

    Every process feeds the whole slice (the global batch holds it once per process, which leaves
    each mean unchanged); with several local devices the batch size and the slice are padded to a
    multiple of them (padding rows at weight 0, every real row at total / real rows, so that loss
    and metrics are the means over the real rows). One process on one device: the inputs unchanged
    and no weights.
    """
    if parallel.local_devices == 1:
        return x, y, None, batch_size
    size = _padded_size(batch_size, parallel.local_devices)
    total = _padded_size(len(x), parallel.local_devices)
    if total == len(x):
        return x, y, None, size
    # Keras divides each batch's weighted loss by its row count, padding included, and averages the
    # batches by row count: real rows at total / real (padding at 0) make that the mean over real rows.
    weights = np.zeros(total, dtype="float32")
    weights[: len(x)] = total / len(x)
    pad = total - len(x)
    return (
        np.concatenate([x, np.repeat(x[:1], pad, axis=0)]),
        np.concatenate([y, np.repeat(y[:1], pad, axis=0)]),
        weights,
        size,
    )


def any_process(flag: bool, parallel: Parallelism) -> bool:
    """Return whether ``flag`` is true on any process (so that all stop at the same step)."""
    if parallel.process_count == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([int(flag)], dtype="int32"))).any())


def share_text(text: str | None, parallel: Parallelism) -> str | None:
    """Return the coordinator's ``text`` (e.g. its MLflow run id; None when it has none) on every
    process; the others' ``text`` is ignored."""
    state, _ = share_from_coordinator({"text": text} if parallel.is_coordinator else None, {}, parallel)
    return None if state is None else state["text"]


def share_from_coordinator(
    state: dict[str, Any] | None, arrays: dict[str, list[np.ndarray]] | None, parallel: Parallelism
) -> tuple[dict[str, Any] | None, dict[str, list[np.ndarray]] | None]:
    """Return the coordinator's (state, arrays) on every process: the training state to resume.

    Only the coordinator reads checkpoints (on SageMaker every host's checkpoint folder is filled
    from the same S3 prefix, but nothing guarantees that they agree, and locally the others have
    none); what it found, or nothing, is sent to all. The others pass None.
    """
    if parallel.process_count == 1:
        return state, arrays
    from jax.experimental import multihost_utils

    def broadcast(value: np.ndarray) -> np.ndarray:
        return np.asarray(multihost_utils.broadcast_one_to_all(value))

    header = b""
    if parallel.is_coordinator and state is not None and arrays is not None:
        layout = {group: [[list(a.shape), a.dtype.str] for a in values] for group, values in arrays.items()}
        header = json.dumps({"state": state, "layout": layout}).encode("utf-8")
    length = int(broadcast(np.asarray([len(header)], dtype="int32"))[0])
    if length == 0:
        return None, None
    raw = np.frombuffer(header, dtype=np.uint8) if parallel.is_coordinator else np.zeros(length, dtype=np.uint8)
    decoded = json.loads(broadcast(raw).astype(np.uint8).tobytes().decode("utf-8"))
    shared: dict[str, list[np.ndarray]] = {}
    for group, specs in decoded["layout"].items():
        mine = arrays[group] if parallel.is_coordinator and arrays is not None else [np.zeros(s, dtype=d) for s, d in specs]
        # JAX computes in 32 bits: wider integers (the optimizer's step count) travel as int32.
        sent = [np.asarray(a).astype(np.int32) if np.asarray(a).dtype.itemsize == 8 and a.dtype.kind in "iu" else a for a in mine]
        shared[group] = [broadcast(a).astype(d) for a, (_, d) in zip(sent, specs)]
    return decoded["state"], shared


def local_model(model: keras.Model, parallel: Parallelism) -> keras.Model:
    """Return ``model`` as a model of this process alone (same architecture, weights and compile
    settings), so that the coordinator can save, evaluate and export it without the other
    processes; ``model`` itself when no distribution is set. Removes the distribution.
    """
    if not parallel.distributed:
        return model
    import keras

    weights = [np.asarray(w) for w in model.get_weights()]
    finish(parallel)
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    copy.compile(loss=model.loss, metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return copy


def lost_host(exc: BaseException, parallel: Parallelism, where: str) -> ClusterError | None:
    """Return a ClusterError naming this host and ``where`` for an error of the multi-host runtime
    (a collective whose peer died, a missed heartbeat), or None for any other error."""
    if parallel.process_count == 1 or isinstance(exc, (ConfigError, KeyboardInterrupt)):
        return None
    text = f"{type(exc).__name__}: {exc}"
    markers = (
        "Gloo",
        "gloo",
        "heartbeat",
        "Connection closed",
        "Connection reset",
        "coordination service",
        "DEADLINE_EXCEEDED",
        "UNAVAILABLE",
    )
    if not any(marker in text for marker in markers):
        return None
    return ClusterError(
        f"host {parallel.host} (process {parallel.process_index} of {parallel.process_count}) lost the other hosts "
        f"at {where}: another host died or stopped answering; see its log. Runtime said: {text.splitlines()[0][:300]}"
    )


def joined() -> bool:
    """Return whether this process joined a multi-host cluster (jax.distributed is initialised)."""
    import sys

    if "jax" not in sys.modules:
        return False
    import jax

    return bool(jax.distributed.is_initialized())
