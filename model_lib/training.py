"""The one training path: ``run(config, data)`` serves the library, the DVC stage and SageMaker.

The loop is written out step by step (``train_on_batch``) so that a run can stop after any step and
continue exactly: the data order is a function of (seed, epoch), every random layer is re-seeded
from (seed, epoch) at the start of an epoch, and a checkpoint holds every variable (weights,
optimizer slots, dropout seed states, running metrics) plus the position (epoch, step). A run
stopped at any moment and started again ends with bitwise the same weights as one never stopped
(Keras' BackupAndRestore restarts the epoch, with other data order). An epoch's training metrics
are over all its batches, across a resume too (:class:`_EpochMetrics`). After the loop,
:mod:`model_lib.assemble` builds the models that ship around the best weights.

SIGTERM (a spot reclaim) and SIGINT (Ctrl-C) during a run with a checkpoint folder save the state
at the next step boundary and raise :class:`~model_lib.errors.TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np

from model_lib import assemble, checkpoints, distributed, epoch_lines, registry, shards
from model_lib.augment import cropped as _cropped
from model_lib.config import TrainConfig, effective_hyperparameters, to_dict
from model_lib.embeddings import FIRST_TOKEN_ID
from model_lib.errors import DataError, TrainingDiverged, TrainingInterrupted
from model_lib.locking import hold_training
from model_lib.prepared import PreparedData, SplitRows

if TYPE_CHECKING:
    from model_lib.distributed import Cluster

logger = logging.getLogger(__name__)

# Settings that change how a run is carried out but not what it computes: a checkpoint made with
# other values of these is still resumed.
_NOT_IN_FINGERPRINT = ("checkpoint_steps", "checkpoint_seconds", "threads")
# Without a progress bar (output to a log or a pipe), a line this often within an epoch: an epoch of a
# large corpus runs for many minutes.
PROGRESS_SECONDS = 60.0


class EpochLogger(Protocol):
    """Receives each finished epoch's metrics (the MLflow tracker implements this)."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def log_history(self, history: list[dict[str, float]]) -> None:
        """Receive the history of a resumed run (to log epochs that were never sent)."""


def fingerprint(config: TrainConfig, data: PreparedData) -> dict[str, Any]:
    """Return what identifies a training: its hyperparameters and a digest of its data.

    A checkpoint is resumed only by a run with the same fingerprint.
    """
    values = {k: v for k, v in to_dict(config).items() if k not in _NOT_IN_FINGERPRINT}
    train, digest = data.train, 0
    if train.part_digests is not None:  # read from parts: theirs, however the hosts shared them out
        arrays: tuple[np.ndarray, ...] = (np.asarray(train.part_digests, dtype=np.uint32), data.embedding_matrix)
    else:
        arrays = (train.ids, train.offsets, train.labels, data.embedding_matrix)
    if train.held is not None:  # some parts only (before model_lib.shards makes it whole): which
        arrays = (np.asarray(train.held.index, dtype=np.int64), *arrays)
    for array in arrays:
        digest = zlib.crc32(np.ascontiguousarray(array).data, digest)
    shape = train.shape if train.held is None else (train.held.split_rows, train.max_length)
    values["data"] = f"{shape}:{len(data.vocabulary)}:{digest:08x}"
    return values


@dataclasses.dataclass
class TrainResult:
    """What a run produced: the id-sequence model, the raw-string model and the per-epoch history.

    ``raw_model`` is None on a backend other than TensorFlow (its string ops are TensorFlow's):
    :func:`model_lib.export.save_raw_string_model` then builds it in a TensorFlow process.
    """

    model: keras.Model
    raw_model: keras.Model | None
    history: list[dict[str, float]]
    hyperparameters: dict[str, Any]
    best_epoch: int
    train_seconds: float
    resumed_from: tuple[int, int] | None = None  # (epoch, step), both 0-based, of the resumed state
    checkpoints_saved: int = 0
    checkpoint_seconds: float = 0.0  # time training waited for checkpoint saves, part of train_seconds
    checkpoint_final_seconds: float = 0.0  # of which: waiting at the end for the last write to land
    epochs_seconds: float = 0.0  # the epochs alone: train_seconds less the fit of the NB-SVM views


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def _seed_variables(model: keras.Model) -> list[Any]:
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights and "seed_generator" in v.path]


def _reseed_random_layers(model: keras.Model, seed: int, epoch: int) -> None:
    """Set every SeedGenerator state (dropout) to a function of (seed, epoch)."""
    for i, variable in enumerate(_seed_variables(model)):
        variable.assign(np.asarray([seed + i, epoch], dtype=variable.dtype))


def _validation_split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    count = round(len(y) * share)
    if count < 2 or len(y) - count < 2:
        raise DataError(f"train: {len(y)} reviews are too few for validation_split={share}")
    stratify = y if min(np.bincount(y.astype(int), minlength=2)) >= 2 else None
    fit, val = train_test_split(indices, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


def _compiled_model(
    config: TrainConfig,
    hp: dict[str, Any],
    data: PreparedData,
    fit_idx: np.ndarray,
    parallel: distributed.Parallelism | None = None,
) -> keras.Model:
    matrix = data.embedding_matrix
    if not config.glove_init:
        # Ablation: same shape and scale as GloVe, but no information in it.
        rng = np.random.default_rng(config.seed)
        matrix = rng.normal(0.0, float(matrix[FIRST_TOKEN_ID:].std()), matrix.shape).astype(np.float32)
        matrix[:FIRST_TOKEN_ID] = 0.0  # padding and OOV rows
    entry = registry.get(config.model)
    fit = SplitRows(data.train, fit_idx)  # no copy of the split
    if parallel is not None and data.train.owners is not None:  # each host holds some rows: their counts add up
        fit = dataclasses.replace(fit, across_hosts=shards.counts_summer(parallel))
    fitted = entry.fitted_arguments(hp, fit, matrix.shape[0])
    model = entry.build(matrix, max_length=data.max_length, **entry.builder_arguments(hp), **fitted)
    optimizer = keras.optimizers.Adam(learning_rate=hp["learning_rate"], clipnorm=hp["clipnorm"])
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return model


def _frozen_weights(model: keras.Model) -> set[int]:
    """Return the ids of the weights of ``model``'s frozen layers (``trainable`` False, nested models
    included): tables the build sets from the config and the data, which training never changes."""
    frozen: set[int] = set()
    layers = list(model.layers)
    while layers:
        layer = layers.pop()
        if not layer.trainable:
            frozen.update(id(weight) for weight in layer.weights)
        layers.extend(getattr(layer, "layers", ()))
    return frozen


def _kept_weights(model: keras.Model) -> list[Any]:
    """Return the weights of ``model`` that a checkpoint and the best weights hold: all but the
    frozen tables (:func:`_frozen_weights`; a resumed run rebuilds them bit for bit, as its
    fingerprint is the same)."""
    frozen = _frozen_weights(model)
    return [weight for weight in model.weights if id(weight) not in frozen]


def _variable_groups(model: keras.Model) -> dict[str, list[Any]]:
    frozen = _frozen_weights(model)
    return {
        "model": [variable for variable in model.variables if id(variable) not in frozen],
        "optimizer": list(model.optimizer.variables),
        "metrics": list(model.metrics_variables),
    }


def _restore(model: keras.Model, generation: checkpoints.Generation, probe: tuple[np.ndarray, np.ndarray]) -> None:
    """Load every variable of ``generation`` into ``model`` (built and compiled the same way).

    Raises:
        ValueError: if the saved variables do not match the model's in number or shape.
    """
    model.optimizer.build(model.trainable_variables)
    model.test_on_batch(*probe)  # builds the compiled metrics' variables, which are then overwritten
    for group, variables in _variable_groups(model).items():
        saved = generation.arrays[group]
        if len(saved) != len(variables):
            raise ValueError(f"{group}: {len(saved)} saved variables, the model has {len(variables)}")
        for variable, value in zip(variables, saved):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{group}: {variable.path} has shape {tuple(variable.shape)}, saved {value.shape}")
            variable.assign(value)


class _CheckpointWriter:
    """Writes generations on one background thread, so training waits only for the copy of its
    variables (tens of milliseconds), not for the file writes (hundreds).

    One write at a time, in order: a save waits for the one before it, which also passes its error
    on. Each generation writes its own copy of the best weights (see :mod:`model_lib.checkpoints`).
    """

    def __init__(self, directory: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.directory = directory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Any = None

    def _write(self, state: dict[str, Any], arrays: dict[str, list[np.ndarray]], best: list[np.ndarray] | None) -> None:
        # No best weights yet (before the first epoch ends): the generation has no best.npz.
        checkpoints.save(self.directory, state, arrays, best)

    def submit(self, state: dict[str, Any], arrays: dict[str, list[np.ndarray]], best: list[np.ndarray] | None) -> None:
        """Queue one generation; ``best`` is None before the first epoch ends (no best weights yet)."""
        self.wait()
        self._pending = self._executor.submit(self._write, state, arrays, best)

    def wait(self) -> None:
        """Return once every queued generation is on disk (raises the error of a failed write)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        self.wait()
        self._executor.shutdown()


class _StopSignals:
    """Turns SIGTERM and SIGINT into a request to stop at the next step boundary.

    A second signal while stopping is not held back (a second Ctrl-C stops at once).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        logger.warning("%s received: saving the training state at the next step", signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[_StopSignals]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _shared_generation(
    generation: checkpoints.Generation | None, identity: dict[str, Any], parallel: distributed.Parallelism
) -> checkpoints.Generation | None:
    """Return the generation to resume on every process: the coordinator's, sent to the others."""
    if parallel.process_count == 1:
        return generation
    if generation is not None and checkpoints.differences(generation.state.get("fingerprint", {}), identity):
        logger.warning("checkpoint %s is from another training; starting afresh", generation.path)
        generation = None
    state, arrays = distributed.share_from_coordinator(
        generation.state if generation else None, generation.arrays if generation else None, parallel
    )
    if state is None or arrays is None:
        return None
    return checkpoints.Generation(generation.path if generation else Path("coordinator"), state, arrays)


def run(
    config: TrainConfig,
    data: PreparedData,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    tracker: EpochLogger | None = None,
    verbose: int | str = "auto",
    run_id: str | None = None,
    cluster: Cluster | None = None,
    while_training: Callable[[str | None], contextlib.AbstractContextManager[Any]] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data`` and return the trained models and history.

    A validation slice (``config.validation_split`` of the training split, stratified, seeded) drives
    early stopping; the weights of the epoch with the lowest validation loss are kept. With
    ``checkpoint_dir``, the whole state is saved every ``config.checkpoint_seconds`` (and every
    ``config.checkpoint_steps`` steps when set) and at the end (see :class:`_Checkpoints` and
    :mod:`model_lib.checkpoints`), and a later call with the same config and data
    resumes at the step where it stopped. ``verbose``: 0 silent, 1 a progress bar, 2 one log line
    per epoch, "auto" a bar on a terminal. ``run_id`` (the MLflow run) is stored in the checkpoints.

    On the JAX backend the run is data parallel over every device, and with a multi-host ``cluster``
    over every host (see :mod:`model_lib.distributed`): every process calls ``run`` with the same
    arguments, each feeds its shard of each global batch (``batch_size`` stays the global batch),
    and only the coordinator reads and writes ``checkpoint_dir`` and logs to ``tracker``.
    ``while_training``, given the coordinator's ``run_id`` (sent to every host), returns a context
    that stays open while this process trains (a worker host's system metrics).

    Raises:
        DataError: if the data do not fit together or are too few to hold out a validation slice.
        ConfigError: if ``cluster`` has several hosts and the backend is not JAX.
        ClusterError: if another host of the cluster died or stopped answering.
        FolderLockError: if another process trains with ``checkpoint_dir`` (it is named).
        TrainingInterrupted: after saving the state, when SIGTERM or SIGINT arrived during training.
    """
    _set_threads(config)
    parallel = distributed.start(cluster)
    directory = checkpoint_dir if parallel.is_coordinator else None
    try:
        shared_run_id = distributed.share_text(run_id, parallel)
        during = while_training(shared_run_id) if while_training is not None else contextlib.nullcontext()
        with hold_training(directory), during:  # the folder is held already when called by the run lifecycle
            return _run(
                config,
                data,
                checkpoint_dir=directory,
                tracker=tracker if parallel.is_coordinator else None,
                verbose=verbose,
                run_id=run_id,
                parallel=parallel,
            )
    except Exception as exc:
        lost = distributed.lost_host(exc, parallel, "training")
        if lost is not None:
            raise lost from exc
        raise
    finally:
        distributed.finish(parallel)


@dataclasses.dataclass
class TrainingState:
    """Where a run stands: saved whole in every checkpoint (``state.json``), restored whole on resume.

    ``epoch`` and ``step`` are 0-based: the next step to train. ``best_epoch`` is -1 before the first
    epoch ends; ``wait`` counts epochs since the lowest validation loss. ``epoch_sums`` are the
    running sums of the compiled metrics' variables over the steps of ``epoch`` trained so far (see
    :class:`_EpochMetrics`), so that a run resumed mid-epoch reports the epoch's metrics over all
    its steps; empty at an epoch boundary.
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int = -1
    wait: int = 0
    epoch_sums: list[np.ndarray] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the state as JSON values: a deep copy, safe to write while training goes on."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["epoch_sums"] = [np.asarray(s, dtype=np.float64).tolist() for s in self.epoch_sums]
        return json.loads(json.dumps(values))

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> TrainingState:
        """Return the state held in a checkpoint's ``state.json`` (other keys there are ignored).

        Raises:
            KeyError: if a key other than ``epoch_sums`` is missing.
        """
        values = {field.name: saved[field.name] for field in dataclasses.fields(cls) if field.name != "epoch_sums"}
        # Checkpoints written before epoch_sums existed lack it: an epoch resumed from one of those
        # reports the metrics of the steps trained after the resume.
        sums = [np.asarray(s, dtype=np.float64) for s in saved.get("epoch_sums", [])]
        return cls(**values, epoch_sums=sums)


class _EpochMetrics:
    """The compiled metrics (loss, accuracy, AUC) of a whole epoch, from running sums of their variables.

    Keras 3's ``train_on_batch`` resets the compiled metrics before every batch, so what it returns
    is that batch's alone. Right after it, though, every metric variable holds the batch's share of
    a sum over rows: Mean's total and count (loss, accuracy) and AUC's true/false positive/negative
    counts at each threshold. Summing them over the epoch's batches and computing each metric from
    the sums (``Metric.stateless_result``: any backend) gives exactly the metric over every row of
    the epoch: the row-weighted mean loss and accuracy, and the AUC of all the epoch's predictions
    (not a mean of batch AUCs). The predictions are those the train step made, before its update.
    """

    def __init__(self, model: keras.Model) -> None:
        self._metrics = list(model.metrics)

    def _variables(self) -> list[Any]:
        return [v for metric in self._metrics for v in metric.variables]

    def add(self, sums: list[np.ndarray], scale: float) -> None:
        """Add the last batch's metric variables, times ``scale``, to ``sums`` (in place; empty: start)."""
        values = [np.asarray(v.numpy(), dtype=np.float64).ravel() for v in self._variables()]
        if not sums:
            sums.extend(np.zeros_like(value) for value in values)
        for total, value in zip(sums, values):
            total += scale * value

    def result(self, sums: list[np.ndarray]) -> dict[str, float]:
        """Return each metric computed from ``sums``, named and ordered (by name) as ``train_on_batch`` returns them."""
        results: dict[str, Any] = {}
        start = 0
        for metric in self._metrics:
            variables = metric.variables
            values = [np.asarray(s, dtype=v.dtype).reshape(v.shape) for s, v in zip(sums[start:], variables)]
            start += len(variables)
            value = metric.stateless_result(values)
            results.update(value if isinstance(value, dict) else {metric.name: value})
        return {name: float(results[name]) for name in sorted(results)}


class _Checkpoints:
    """Saves the training state at its cadence and counts what saving cost the run.

    A generation is saved after a step once ``every_seconds`` have passed since the last save (or
    the start), every ``every_steps`` steps of an epoch, at the end of training and when a stop is
    requested; 0 turns a cadence off. With ``every_seconds`` 0, each epoch end is saved too (the
    cadence by steps alone). By time, what a spot job uploads per second does not grow with the
    speed of the machine. ``seconds`` is the time training waited for saves, ``final_seconds``
    the part of it spent at the end waiting for the last write to land.
    """

    def __init__(self, writer: _CheckpointWriter, context: dict[str, Any], every_steps: int, every_seconds: float) -> None:
        self._writer, self._context = writer, json.loads(json.dumps(context))
        self._every_steps, self._every_seconds = every_steps, every_seconds
        self._last = time.monotonic()
        self.count, self.seconds, self.final_seconds = 0, 0.0, 0.0

    def _time_is_up(self) -> bool:
        return bool(self._every_seconds) and time.monotonic() - self._last >= self._every_seconds

    def due(self, step: int) -> bool:
        """Return whether the cadence saves after ``step`` steps of an epoch."""
        return (bool(self._every_steps) and step % self._every_steps == 0) or self._time_is_up()

    def due_at_epoch_end(self, finished: bool) -> bool:
        """Return whether the cadence saves at an epoch's end; ``finished``: training ends there."""
        return finished or not self._every_seconds or self._time_is_up()

    def save(self, state: TrainingState, model: keras.Model, best: list[np.ndarray] | None) -> None:
        """Queue one generation of ``state``, every variable of ``model`` and ``best`` (the best weights so far)."""
        began = time.perf_counter()
        snapshot = {**state.to_json(), **self._context}
        # .numpy() of a variable is already a snapshot (a read, then a copy): one copy, no second one.
        arrays = {group: [np.asarray(v.numpy()) for v in variables] for group, variables in _variable_groups(model).items()}
        self._writer.submit(snapshot, arrays, best)
        self._last = time.monotonic()
        self.count += 1
        self.seconds += time.perf_counter() - began

    def finish(self) -> None:
        """Wait until the last generation is on disk (the run counts as trained only then)."""
        began = time.perf_counter()
        self._writer.close()
        self.final_seconds = time.perf_counter() - began
        self.seconds += self.final_seconds

    def abandon(self) -> None:
        """Wait for the queued writes and stop the writer (a stopped run)."""
        self._writer.close()


@dataclasses.dataclass
class _Run:
    """What the epochs of one run share: fixed inputs, the checkpoints, the signals, the best weights."""

    config: TrainConfig
    hp: dict[str, Any]
    data: PreparedData
    model: keras.Model
    parallel: distributed.Parallelism
    fit_idx: np.ndarray
    validation: tuple[np.ndarray, np.ndarray, np.ndarray | None, int]  # distributed.validation_feed
    directory: Path | None
    saver: _Checkpoints | None
    tracker: EpochLogger | None
    verbose: int | str
    best: list[np.ndarray] | None = None
    stop: _StopSignals = dataclasses.field(default_factory=_StopSignals)

    @property
    def steps(self) -> int:
        return math.ceil(len(self.fit_idx) / int(self.hp["batch_size"]))

    def stops_early(self, state: TrainingState) -> bool:
        """Return whether early stopping ends training at ``state``: ``patience`` epochs in a row
        without a lower validation loss (0 counts as 1)."""
        return state.wait >= max(self.config.patience, 1)

    @property
    def watching(self) -> bool:
        """Return whether stops are checked at step boundaries (there is a state to save, or hosts to keep in step)."""
        return self.directory is not None or self.parallel.process_count > 1

    @property
    def show_bar(self) -> bool:
        return self.verbose == 1 or (self.verbose == "auto" and os.isatty(1))

    def stop_requested(self) -> bool:
        """Return whether a signal arrived on any process (all then stop at the same step)."""
        return distributed.any_process(self.stop.received is not None, self.parallel)

    def interrupted(self) -> TrainingInterrupted:
        """Return the error to raise for a stop, once every queued checkpoint is on disk."""
        if self.saver is not None:
            self.saver.abandon()
        signum = self.stop.received or signal.SIGTERM  # another host may have received the signal
        if self.directory is None and not self.parallel.is_coordinator:
            return TrainingInterrupted(signum, "the coordinator's checkpoint folder")
        return TrainingInterrupted(signum, str(self.directory) if self.directory is not None else None)


def _set_threads(config: TrainConfig) -> None:
    """Bound TensorFlow's thread pools to ``config.threads`` (None: TensorFlow decides)."""
    if config.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)


def _resumed(
    model: keras.Model, generation: checkpoints.Generation | None, identity: dict[str, Any], probe: tuple[np.ndarray, np.ndarray]
) -> tuple[TrainingState, list[np.ndarray] | None] | None:
    """Load ``generation`` into ``model`` and return its state and best weights; None when
    there is none, or it is from another training (a warning names what differs)."""
    if generation is None:
        return None
    changed = checkpoints.differences(generation.state.get("fingerprint", {}), identity)
    if changed:
        logger.warning("checkpoint %s is from another training (%s differ); starting afresh", generation.path, ", ".join(changed))
        return None
    _restore(model, generation, probe)
    return TrainingState.from_json(generation.state), generation.arrays.get("best") or None


def _train_step(run: _Run, state: TrainingState, order: np.ndarray, metrics: _EpochMetrics) -> None:
    """Train step ``state.step`` of ``state.epoch`` (rows ``order``) and add its metrics to the epoch's."""
    batch_size, seed = int(run.hp["batch_size"]), run.config.seed
    batch = order[state.step * batch_size : (state.step + 1) * batch_size]
    # Crops depend on (seed, epoch, step) only, so a resumed run feeds the same batches, and they
    # are cut from the global batch, so every host of a cluster feeds the same rows.
    # Padded here, a batch at a time: the split holds each review's ids only.
    x = _cropped(run.data.train.padded(batch), run.hp["crop_share"], np.random.default_rng([seed, state.epoch, state.step]))
    y = run.data.train.labels[batch].astype("float32")
    owners = None if run.data.train.owners is None else run.data.train.owners[batch]
    rows, weights = distributed.host_batch(np.arange(len(batch)), run.parallel, owners)  # this host's shard
    logs = run.model.train_on_batch(x[rows], y[rows], sample_weight=weights, return_dict=True)
    _check_finite_loss(float(logs["loss"]), f"loss is {{}} at epoch {state.epoch + 1}, step {state.step + 1}")
    # The metric variables are the global batch's, padding included (every host feeds a shard of
    # len(rows) rows, each real row weighted fed/real): scaled to one per real row, the epoch's sums
    # weight every review once, as one process on one device does.
    metrics.add(state.epoch_sums, len(batch) / (len(rows) * run.parallel.process_count))
    state.step += 1


def _check_finite_loss(value: float, what: str) -> None:
    """Stop a run whose loss is NaN or inf (Keras' TerminateOnNaN): it would ship a model predicting NaN.

    ``what`` says which loss and when, with ``{}`` where the value goes.

    Raises:
        TrainingDiverged: naming the loss, the epoch and step (1-based); checkpoints hold the state before it.
    """
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"train: {what.format(value)}; expected a finite loss: lower train.learning_rate, or check the scale "
            "of the prepared data"
        )


def _train_epoch(run: _Run, state: TrainingState) -> dict[str, float]:
    """Train the steps of ``state.epoch`` from ``state.step`` on; return the epoch's training metrics.

    Raises:
        TrainingInterrupted: after saving the state, when a stop was requested between two steps.
    """
    order = run.fit_idx[np.random.default_rng([run.config.seed, state.epoch]).permutation(len(run.fit_idx))]
    metrics = _EpochMetrics(run.model)
    bar = keras.utils.Progbar(run.steps, stateful_metrics=["loss", "accuracy", "auc"]) if run.show_bar else None
    if bar is not None:
        print(f"Epoch {state.epoch + 1}/{int(run.hp['epochs'])}", flush=True)
    said = time.monotonic()
    while state.step < run.steps:
        _train_step(run, state, order, metrics)
        if bar is not None:
            bar.update(state.step, values=list(metrics.result(state.epoch_sums).items()))
        elif run.verbose != 0 and time.monotonic() - said >= PROGRESS_SECONDS:  # a log, not a terminal: a line now and then
            said = time.monotonic()
            shown = " - ".join(f"{k} {v:.4f}" for k, v in metrics.result(state.epoch_sums).items())
            logger.info("epoch %d/%d: step %d of %d: %s", state.epoch + 1, int(run.hp["epochs"]), state.step, run.steps, shown)
        if run.watching and state.step < run.steps:
            stop_now = run.stop_requested()
            if run.saver is not None and (stop_now or run.saver.due(state.step)):
                run.saver.save(state, run.model, run.best)
            if stop_now:
                raise run.interrupted()
    return metrics.result(state.epoch_sums)


def _end_epoch(run: _Run, state: TrainingState, trained: dict[str, float], began: float) -> None:
    """Validate, record the epoch (history, best weights, early stopping), save, log; move to the next.

    Raises:
        TrainingInterrupted: after saving the state, when a stop was requested during the epoch.
    """
    x_val, y_val, val_weights, val_batch_size = run.validation
    validation = run.model.evaluate(
        x_val, y_val, sample_weight=val_weights, batch_size=val_batch_size, verbose=0, return_dict=True
    )
    epoch = state.epoch
    metrics = {**trained, **{f"val_{k}": float(v) for k, v in validation.items()}}
    _check_finite_loss(metrics["val_loss"], f"val_loss is {{}} at the end of epoch {epoch + 1}")
    state.history.append({"epoch": epoch + 1, **metrics})
    if state.best_val_loss is None or metrics["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.wait = metrics["val_loss"], epoch, 0
        run.best = [np.asarray(w.numpy()) for w in _kept_weights(run.model)]
    else:
        state.wait += 1
    state.epoch, state.step, state.epoch_sums = epoch + 1, 0, []
    finished = state.epoch >= int(run.hp["epochs"]) or run.stops_early(state)
    saved = False
    if run.saver is not None and run.saver.due_at_epoch_end(finished):
        run.saver.save(state, run.model, run.best)
        saved = True
    if run.tracker is not None:
        run.tracker.log_epoch(epoch, metrics)
    if run.verbose == 2 or run.show_bar:
        logger.info(epoch_lines.epoch_line(epoch, int(run.hp["epochs"]), metrics, time.perf_counter() - began))
    if run.watching and run.stop_requested():  # after the logging: a signal that came meanwhile stops here
        if run.saver is not None and not saved:
            run.saver.save(state, run.model, run.best)
        raise run.interrupted()


def _train_epochs(run: _Run, state: TrainingState) -> None:
    """Train from ``state`` until the last epoch or early stopping; the best weights end in ``run.best``.

    Raises:
        TrainingInterrupted: after saving the state, when SIGTERM or SIGINT arrived.
    """
    with run.stop.installed(run.watching):
        while state.epoch < int(run.hp["epochs"]):
            if state.step == 0:
                if run.stops_early(state):
                    break
                _reseed_random_layers(run.model, run.config.seed, state.epoch)
                run.model.reset_metrics()
            began = time.perf_counter()
            trained = _train_epoch(run, state)
            _end_epoch(run, state, trained, began)
        if run.saver is not None:
            run.saver.finish()


def _run(
    config: TrainConfig,
    data: PreparedData,
    *,
    checkpoint_dir: str | os.PathLike[str] | None,
    tracker: EpochLogger | None,
    verbose: int | str,
    run_id: str | None,
    parallel: distributed.Parallelism,
) -> TrainResult:
    data = dataclasses.replace(data, train=shards.hollowed(data.train, parallel, data.sources["train"]))
    data.check()
    hp = effective_hyperparameters(config)
    _seed_everything(config.seed)
    fit_idx, val_idx = _validation_split(data.train.labels, config.validation_split, config.seed)
    x_val = shards.padded_everywhere(data.train, val_idx, parallel)
    y_val = data.train.labels[val_idx].astype("float32")
    identity = fingerprint(config, data)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    model = _compiled_model(config, hp, data, fit_idx, parallel)

    rows = np.zeros(parallel.local_devices, dtype=int)  # one probe row per local device (data parallelism splits it)
    generation = _shared_generation(checkpoints.latest(directory), identity, parallel)
    resumed = _resumed(model, generation, identity, (x_val[rows], y_val[rows]))
    state, best = resumed or (TrainingState(), None)
    resumed_from = (state.epoch, state.step) if resumed is not None else None
    run = _Run(
        config, hp, data, model, parallel, fit_idx,
        validation=distributed.validation_feed(x_val, y_val, int(hp["batch_size"]), parallel),
        directory=directory, saver=None, tracker=tracker, verbose=verbose, best=best,
    )  # fmt: skip
    if generation is not None and resumed is not None:
        logger.info("resuming at epoch %d, step %d of %d, from %s", state.epoch + 1, state.step, run.steps, generation.path)
        if tracker is not None:
            tracker.log_history(list(state.history))
    if directory is not None:
        context = {"fingerprint": identity, "run_id": run_id, "steps_per_epoch": run.steps}
        run.saver = _Checkpoints(_CheckpointWriter(directory), context, config.checkpoint_steps, config.checkpoint_seconds)

    started = time.perf_counter()
    _train_epochs(run, state)
    seconds = time.perf_counter() - started
    if run.best is not None:
        for weight, value in zip(_kept_weights(model), run.best, strict=True):
            weight.assign(value)
    if state.history and (run.verbose == 2 or run.show_bar):  # last: a tuner scraping the log scores the kept weights
        kept = next(entry for entry in state.history if entry["epoch"] == state.best_epoch + 1)
        logger.info(epoch_lines.best_line(state.best_epoch, int(hp["epochs"]), kept))
    # The padded validation slice (reviews x max_length ids) is not needed by the views fitted next:
    # let it go before they build their matrices, the run's memory peak.
    del x_val, y_val, rows
    run.validation = (np.zeros((0, 0), np.int32), np.zeros(0, np.float32), None, 1)
    view_sample = None
    if data.train.owners is not None and assemble.has_views(hp):  # the coordinator fits them on rows of every host
        view_rows = assemble.view_rows(len(data.train), config.nb_view_reviews, config.seed)
        view_sample = (shards.padded_everywhere(data.train, view_rows, parallel), data.train.labels[view_rows])
    shipped = assemble.shipped_model(
        distributed.local_model(model, parallel), data, config, hp, fit_views=parallel.is_coordinator, view_sample=view_sample
    )
    saver = run.saver
    return TrainResult(
        model=shipped.model,
        raw_model=shipped.raw_model,
        history=state.history,
        hyperparameters=hp,
        best_epoch=state.best_epoch + 1,
        train_seconds=seconds + shipped.seconds,
        resumed_from=resumed_from,
        checkpoints_saved=saver.count if saver else 0,
        checkpoint_seconds=saver.seconds if saver else 0.0,
        checkpoint_final_seconds=saver.final_seconds if saver else 0.0,
        epochs_seconds=seconds,
    )


__all__ = ["EpochLogger", "TrainResult", "TrainingState", "effective_hyperparameters", "fingerprint", "run"]
