"""The one training path: ``run(config, data)`` serves the library, the DVC stage and SageMaker.

The loop is written out step by step (``train_on_batch``) so that a run can stop after any step and
continue exactly: the data order is a function of (seed, epoch), every random layer is re-seeded
from (seed, epoch) at the start of an epoch, and a checkpoint holds every variable (weights,
optimizer slots, dropout seed states, running metrics) plus the position (epoch, step). A run
stopped at any moment and started again ends with bitwise the same weights as one never stopped
(Keras' BackupAndRestore restarts the epoch, with other data order).

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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np

from model_lib import checkpoints, distributed
from model_lib.config import TrainConfig, effective_hyperparameters, to_dict
from model_lib.embeddings import FIRST_TOKEN_ID
from model_lib.errors import DataError, TrainingInterrupted
from model_lib.models import LinearView, build_model, fit_nb_view, nb_log_count_ratios, ngram_matrix, with_views
from model_lib.prepared import PreparedData

if TYPE_CHECKING:
    from model_lib.distributed import Cluster

logger = logging.getLogger(__name__)

# Settings that change how a run is carried out but not what it computes: a checkpoint made with
# other values of these is still resumed.
_NOT_IN_FINGERPRINT = ("checkpoint_steps", "threads")


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
    digest = 0
    for array in (data.x_train, data.y_train, data.embedding_matrix):
        digest = zlib.crc32(np.ascontiguousarray(array).data, digest)
    values["data"] = f"{data.x_train.shape}:{len(data.vocabulary)}:{digest:08x}"
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


CROP_TOKENS = (4, 64)  # shortest and longest window of a cropped review


def _views(data: PreparedData, config: TrainConfig, hp: dict[str, Any], epochs: int) -> list[tuple[LinearView, float]]:
    """Return the ensemble's (view, weight) pairs: an NB-SVM fitted on the training reviews, and one
    fitted on every review once whole and once cropped (so that it learns short texts too)."""
    x, y, vocab, buckets, order = data.x_train, data.y_train, data.vocabulary.size, config.ngram_buckets, config.ngram_order
    whole = ngram_matrix(x, vocab, buckets, order)
    views = []
    if hp["nb_view_weight"] > 0:
        views.append((fit_nb_view(whole, y), hp["nb_view_weight"]))
    if hp["nb_crop_view_weight"] > 0:
        from scipy import sparse

        crops = _cropped(x, 1.0, np.random.default_rng([config.seed, epochs]))
        matrix = sparse.vstack([whole, ngram_matrix(crops, vocab, buckets, order)], format="csr")
        views.append((fit_nb_view(matrix, np.concatenate([y, y])), hp["nb_crop_view_weight"]))
    return views


def _cropped(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Return ``x`` (a batch of 'pre'-padded id rows) with ``share`` of its rows, chosen by ``rng``,
    replaced by a random window of their own tokens, padded in front again.

    Window lengths are log-uniform over CROP_TOKENS, so one-line texts are as common as paragraphs.
    """
    if share <= 0:
        return x
    x = x.copy()
    chosen = np.flatnonzero(rng.random(len(x)) < share)
    lengths = np.exp(rng.uniform(np.log(CROP_TOKENS[0]), np.log(CROP_TOKENS[1] + 1), len(chosen))).astype(int)
    starts = rng.random(len(chosen))
    for row, length, start in zip(chosen, lengths, starts):
        tokens = x[row][x[row] != 0]
        length = min(int(length), len(tokens))
        first = int(start * (len(tokens) - length + 1))
        x[row] = 0
        if length:
            x[row, -length:] = tokens[first : first + length]
    return x


def _validation_split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    count = round(len(y) * share)
    if count < 2 or len(y) - count < 2:
        raise DataError(f"train: {len(y)} reviews are too few for validation_split={share}")
    stratify = y if min(np.bincount(y.astype(int), minlength=2)) >= 2 else None
    fit, val = train_test_split(indices, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(val)


def _compiled_model(config: TrainConfig, hp: dict[str, Any], data: PreparedData, fit_idx: np.ndarray) -> keras.Model:
    matrix = data.embedding_matrix
    if not config.glove_init:
        # Ablation: same shape and scale as GloVe, but no information in it.
        rng = np.random.default_rng(config.seed)
        matrix = rng.normal(0.0, float(matrix[FIRST_TOKEN_ID:].std()), matrix.shape).astype(np.float32)
        matrix[:FIRST_TOKEN_ID] = 0.0  # padding and OOV rows
    extra: dict[str, Any] = {}
    if config.model == "ngram_glove":
        extra["ngram_weights"] = nb_log_count_ratios(
            data.x_train[fit_idx], data.y_train[fit_idx], matrix.shape[0], config.ngram_buckets, config.ngram_order
        )
    model = build_model(
        config.model,
        matrix,
        max_length=data.max_length,
        dropout=hp["dropout"],
        ngram_buckets=config.ngram_buckets,
        ngram_order=config.ngram_order,
        **extra,
    )
    optimizer = keras.optimizers.Adam(learning_rate=hp["learning_rate"], clipnorm=hp["clipnorm"])
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return model


def _variable_groups(model: keras.Model) -> dict[str, list[Any]]:
    return {
        "model": list(model.variables),
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
    on. ``best`` unchanged since the last write is linked, not written again.
    """

    def __init__(self, directory: Path, best_file: Path | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.directory = directory
        self._best_file = best_file
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Any = None

    def _write(self, state: dict[str, Any], arrays: dict[str, list[np.ndarray]], best: list[np.ndarray] | None) -> None:
        # No best weights yet (before the first epoch ends): the generation has no best.npz.
        folder = checkpoints.save(self.directory, state, arrays, best if best is not None else self._best_file)
        if best is not None or self._best_file is not None:
            self._best_file = folder / checkpoints.BEST

    def submit(self, state: dict[str, Any], arrays: dict[str, list[np.ndarray]], best: list[np.ndarray] | None) -> None:
        """Queue one generation; ``best`` is None when the best weights did not change since the last one."""
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


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float], seconds: float) -> str:
    shown = " - ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    return f"epoch {epoch + 1}/{epochs}: {shown} ({seconds:.1f} s)"


def run(
    config: TrainConfig,
    data: PreparedData,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    tracker: EpochLogger | None = None,
    verbose: int | str = "auto",
    run_id: str | None = None,
    cluster: Cluster | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data`` and return the trained models and history.

    A validation slice (``config.validation_split`` of the training split, stratified, seeded) drives
    early stopping; the weights of the epoch with the lowest validation loss are kept. With
    ``checkpoint_dir``, the whole state is saved every ``config.checkpoint_steps`` steps and at each
    epoch end (see :mod:`model_lib.checkpoints`), and a later call with the same config and data
    resumes at the step where it stopped. ``verbose``: 0 silent, 1 a progress bar, 2 one log line
    per epoch, "auto" a bar on a terminal. ``run_id`` (the MLflow run) is stored in the checkpoints.

    On the JAX backend the run is data parallel over every device, and with a multi-host ``cluster``
    over every host (see :mod:`model_lib.distributed`): every process calls ``run`` with the same
    arguments, each feeds its shard of each global batch (``batch_size`` stays the global batch),
    and only the coordinator reads and writes ``checkpoint_dir`` and logs to ``tracker``.

    Raises:
        DataError: if the data do not fit together or are too few to hold out a validation slice.
        ConfigError: if ``cluster`` has several hosts and the backend is not JAX.
        ClusterError: if another host of the cluster died or stopped answering.
        TrainingInterrupted: after saving the state, when SIGTERM or SIGINT arrived during training.
    """
    parallel = distributed.start(cluster)
    try:
        return _run(
            config,
            data,
            checkpoint_dir=checkpoint_dir if parallel.is_coordinator else None,
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
    data.check()
    if config.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    hp = effective_hyperparameters(config)
    epochs, batch_size = int(hp["epochs"]), int(hp["batch_size"])
    _seed_everything(config.seed)
    fit_idx, val_idx = _validation_split(data.y_train, config.validation_split, config.seed)
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx].astype("float32")
    steps = math.ceil(len(fit_idx) / batch_size)
    identity = fingerprint(config, data)

    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    model = _compiled_model(config, hp, data, fit_idx)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "best_val_loss": None, "best_epoch": -1, "wait": 0}
    best: list[np.ndarray] | None = None
    best_changed = False  # since the last saved generation
    best_file: Path | None = None
    resumed_from = None
    generation = _shared_generation(checkpoints.latest(directory), identity, parallel)
    if generation is not None:
        changed = checkpoints.differences(generation.state.get("fingerprint", {}), identity)
        if changed:
            logger.warning(
                "checkpoint %s is from another training (%s differ); starting afresh", generation.path, ", ".join(changed)
            )
        else:
            # One row per local device: data parallelism splits the probe batch across them.
            rows = np.zeros(parallel.local_devices, dtype=int)
            _restore(model, generation, (x_val[rows], y_val[rows]))
            state = {key: generation.state[key] for key in state}
            best, best_file = generation.arrays.get("best") or None, generation.best_file
            resumed_from = (state["epoch"], state["step"])
            logger.info("resuming at epoch %d, step %d of %d, from %s", state["epoch"] + 1, state["step"], steps, generation.path)
            if tracker is not None:
                tracker.log_history(list(state["history"]))

    saved = {"count": 0, "seconds": 0.0, "final": 0.0}

    writer = _CheckpointWriter(directory, best_file) if directory is not None else None

    def save() -> None:
        nonlocal best_changed
        assert writer is not None
        began = time.perf_counter()
        snapshot = json.loads(json.dumps({**state, "fingerprint": identity, "run_id": run_id, "steps_per_epoch": steps}))
        # .numpy() of a variable is already a snapshot (a read, then a copy): one copy, no second one.
        arrays = {group: [np.asarray(v.numpy()) for v in variables] for group, variables in _variable_groups(model).items()}
        writer.submit(snapshot, arrays, best if best_changed else None)
        best_changed = False
        saved["count"] += 1
        saved["seconds"] += time.perf_counter() - began

    def stop_here() -> TrainingInterrupted:
        if writer is not None:
            writer.close()
        # In a cluster another host may have received the signal: every host stops at the same step.
        if directory is None and not parallel.is_coordinator:
            return TrainingInterrupted(stop.received or signal.SIGTERM, "the coordinator's checkpoint folder")
        return TrainingInterrupted(stop.received or signal.SIGTERM, str(directory) if directory is not None else None)

    def stopping() -> bool:
        return distributed.any_process(stop.received is not None, parallel)

    x_val_fed, y_val_fed, val_weights, val_batch_size = distributed.validation_feed(x_val, y_val, batch_size, parallel)

    stop = _StopSignals()
    started = time.perf_counter()
    show_bar = verbose == 1 or (verbose == "auto" and os.isatty(1))
    with stop.installed(directory is not None or parallel.process_count > 1):
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            if state["step"] == 0:
                if state["wait"] >= max(config.patience, 1):
                    break  # `patience` epochs in a row without a lower validation loss (0 counts as 1)
                _reseed_random_layers(model, config.seed, epoch)
                model.reset_metrics()
            epoch_started = time.perf_counter()
            order = fit_idx[np.random.default_rng([config.seed, epoch]).permutation(len(fit_idx))]
            bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy", "auc"]) if show_bar else None
            if bar is not None:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            logs: dict[str, float] = {}
            while state["step"] < steps:
                batch = order[state["step"] * batch_size : (state["step"] + 1) * batch_size]
                # Crops depend on (seed, epoch, step) only, so a resumed run feeds the same batches, and
                # they are cut from the global batch, so every host of a cluster feeds the same rows.
                x = _cropped(data.x_train[batch], hp["crop_share"], np.random.default_rng([config.seed, epoch, state["step"]]))
                y = data.y_train[batch].astype("float32")
                rows, weights = distributed.host_batch(np.arange(len(batch)), parallel)  # this host's shard
                logs = model.train_on_batch(x[rows], y[rows], sample_weight=weights, return_dict=True)
                state["step"] += 1
                if bar is not None:
                    bar.update(state["step"], values=list(logs.items()))
                if (directory is not None or parallel.process_count > 1) and state["step"] < steps:
                    stop_now = stopping()
                    if directory is not None and (
                        stop_now or (config.checkpoint_steps and state["step"] % config.checkpoint_steps == 0)
                    ):
                        save()
                    if stop_now:
                        raise stop_here()
            validation = model.evaluate(
                x_val_fed, y_val_fed, sample_weight=val_weights, batch_size=val_batch_size, verbose=0, return_dict=True
            )
            metrics = {**{k: float(v) for k, v in logs.items()}, **{f"val_{k}": float(v) for k, v in validation.items()}}
            state["history"].append({"epoch": epoch + 1, **metrics})
            if state["best_val_loss"] is None or metrics["val_loss"] < state["best_val_loss"]:
                state.update(best_val_loss=metrics["val_loss"], best_epoch=epoch, wait=0)
                best, best_changed = [np.asarray(w) for w in model.get_weights()], True
            else:
                state["wait"] += 1
            state.update(epoch=epoch + 1, step=0)
            if directory is not None:
                save()
            if tracker is not None:
                tracker.log_epoch(epoch, metrics)
            if verbose == 2 or bar is not None:
                logger.info(_epoch_line(epoch, epochs, metrics, time.perf_counter() - epoch_started))
            if (directory is not None or parallel.process_count > 1) and stopping():
                raise stop_here()
        if writer is not None:
            began = time.perf_counter()
            writer.close()  # the last generation is on disk before the run counts as trained
            saved["final"] = time.perf_counter() - began
            saved["seconds"] += saved["final"]
    seconds = time.perf_counter() - started

    if best is not None:
        model.set_weights(best)
    model = distributed.local_model(model, parallel)
    if parallel.is_coordinator and (hp["nb_view_weight"] > 0 or hp["nb_crop_view_weight"] > 0):  # workers' models are not kept
        began = time.perf_counter()
        model = with_views(model, _views(data, config, hp, epochs), buckets=config.ngram_buckets, order=config.ngram_order)
        logger.info("NB-SVM views fitted in %.1f s", time.perf_counter() - began)
        seconds += time.perf_counter() - began
    from model_lib.export import raw_string_model

    return TrainResult(
        model=model,
        raw_model=raw_string_model(model, data.vocabulary, data.max_length) if keras.backend.backend() == "tensorflow" else None,
        history=state["history"],
        hyperparameters=hp,
        best_epoch=state["best_epoch"] + 1,
        train_seconds=seconds,
        resumed_from=resumed_from,
        checkpoints_saved=int(saved["count"]),
        checkpoint_seconds=saved["seconds"],
        checkpoint_final_seconds=saved["final"],
    )


__all__ = ["EpochLogger", "TrainResult", "effective_hyperparameters", "fingerprint", "run"]
