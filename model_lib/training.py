"""The one training path: ``run(config, data)`` serves the library, the DVC stage and SageMaker.

Data order is a function of (seed, epoch) and every random layer is re-seeded from (seed, epoch) at
the start of each epoch, so a run resumed from its last end-of-epoch checkpoint continues exactly as
if it had never stopped (Keras' BackupAndRestore alone restarts the epoch with other data order).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from model_lib._io import atomic_path, write_json
from model_lib.config import TrainConfig, to_dict
from model_lib.errors import DataError
from model_lib.models import DEFAULTS, build_model, nb_log_count_ratios
from model_lib.text import Vocabulary

logger = logging.getLogger(__name__)

CHECKPOINT_MODEL = "last.keras"
CHECKPOINT_BEST = "best.weights.h5"
CHECKPOINT_STATE = "state.json"


class EpochLogger(Protocol):
    """Receives each finished epoch's metrics (the MLflow tracker implements this)."""

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclasses.dataclass
class PreparedData:
    """Encoded splits, their vocabulary and the GloVe matrix for it (the SageMaker channels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vocabulary: Vocabulary
    embedding_matrix: np.ndarray

    @property
    def max_length(self) -> int:
        """Return the encoded sequence length."""
        return int(self.x_train.shape[1])

    def check(self) -> None:
        """Check the parts fit together.

        Raises:
            DataError: if the matrix rows differ from the vocabulary's ids, an id is out of range,
                the splits differ in length, or the training split is empty.
        """
        if self.embedding_matrix.ndim != 2 or self.embedding_matrix.shape[0] != self.vocabulary.size:
            raise DataError(
                f"embeddings: {self.embedding_matrix.shape[0]} rows, but the vocabulary has "
                f"{len(self.vocabulary)} tokens (+2 for padding and OOV = {self.vocabulary.size}); "
                "were they prepared together?"
            )
        if len(self.x_train) == 0:
            raise DataError("train: the training split is empty")
        for name, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 2 or len(x) != len(y):
                raise DataError(f"{name}: expected x of shape (n, length) and n labels, got {x.shape} and {y.shape}")
            if x.size and (int(x.max()) >= self.vocabulary.size or int(x.min()) < 0):
                raise DataError(f"{name}: token id {int(x.max())} is outside the vocabulary's {self.vocabulary.size} ids")
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise DataError(f"test: sequence length {self.x_test.shape[1]} differs from train's {self.x_train.shape[1]}")


def save_split(path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray) -> None:
    """Write one encoded split as a single ``.npz`` file (x: int32 ids, y: int8 labels), atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, x=x.astype(np.int32), y=y.astype(np.int8))


def load_split(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) of an encoded split file.

    Raises:
        DataError: if the file is missing or is not such a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: encoded split not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["x"], archive["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not an encoded split (.npz with x and y): {exc}") from None


def load_embedding_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the embedding matrix saved as ``.npy``.

    Raises:
        DataError: if the file is missing or not a 2-D float array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: embedding matrix not found")
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a .npy matrix: {exc}") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(f"{path}: expected a 2-D float matrix, got {matrix.dtype} {matrix.shape}")
    return matrix.astype(np.float32, copy=False)


def load_prepared(
    train: str | os.PathLike[str],
    test: str | os.PathLike[str],
    vocab: str | os.PathLike[str],
    embeddings: str | os.PathLike[str],
) -> PreparedData:
    """Return the prepared data from its four files, checked to fit together.

    Raises:
        DataError: if a file is missing or malformed, or the files do not fit together.
    """
    x_train, y_train = load_split(train)
    x_test, y_test = load_split(test)
    data = PreparedData(x_train, y_train, x_test, y_test, Vocabulary.load(vocab), load_embedding_matrix(embeddings))
    data.check()
    return data


def effective_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """Return the config with each null filled from the model's defaults (what the run really uses)."""
    defaults = DEFAULTS[config.model]
    values = to_dict(config)
    for name in ("epochs", "batch_size", "learning_rate", "dropout"):
        if values[name] is None:
            values[name] = getattr(defaults, name)
    values["clipnorm"] = defaults.clipnorm
    return values


@dataclasses.dataclass
class TrainResult:
    """What a run produced: the id-sequence model, the raw-string model and the per-epoch history."""

    model: keras.Model
    raw_model: keras.Model
    history: list[dict[str, float]]
    hyperparameters: dict[str, Any]
    best_epoch: int
    train_seconds: float
    resumed_from_epoch: int | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def _reseed_random_layers(model: keras.Model, seed: int, epoch: int) -> None:
    """Set every SeedGenerator state (dropout) to a function of (seed, epoch)."""
    weights = {id(v) for v in model.weights}
    for i, variable in enumerate(v for v in model.variables if id(v) not in weights):
        if "seed_generator" in variable.path:
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


def _compiled_model(config: TrainConfig, hp: dict[str, Any], data: PreparedData, fit_idx: np.ndarray) -> keras.Model:
    matrix = data.embedding_matrix
    if not config.glove_init:
        # Ablation: same shape and scale as GloVe, but no information in it.
        rng = np.random.default_rng(config.seed)
        matrix = rng.normal(0.0, float(matrix[2:].std()), matrix.shape).astype(np.float32)
        matrix[:2] = 0.0
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


def _save_checkpoint(directory: Path, model: keras.Model, state: dict[str, Any]) -> None:
    with atomic_path(directory / CHECKPOINT_MODEL, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(directory / CHECKPOINT_STATE, state)


def _load_checkpoint(directory: Path | None, config: TrainConfig) -> tuple[keras.Model, dict[str, Any]] | None:
    if directory is None or not (directory / CHECKPOINT_STATE).is_file() or not (directory / CHECKPOINT_MODEL).is_file():
        return None
    state = json.loads((directory / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    if state.get("config") != to_dict(config):
        logger.warning("checkpoint in %s is from other hyperparameters; starting afresh", directory)
        return None
    return keras.models.load_model(directory / CHECKPOINT_MODEL), state


def raw_string_model(model: keras.Model, vocabulary: Vocabulary, max_length: int) -> keras.Model:
    """Return a model taking raw review strings, shape (batch, 1) like a one-column table, and
    returning P(positive) per review, shape (batch, 1)."""
    texts = keras.Input(shape=(1,), dtype="string", name="review")
    ids = vocabulary.encoder(max_length)(texts)
    return keras.Model(texts, model(ids), name=f"{model.name}_raw_text")


def run(
    config: TrainConfig,
    data: PreparedData,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    tracker: EpochLogger | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Train ``config.model`` on ``data`` and return the trained models and history.

    A validation slice (``config.validation_split`` of the training split, stratified, seeded) drives
    early stopping; the weights of the epoch with the lowest validation loss are kept. With
    ``checkpoint_dir``, the model, optimizer and history are saved after every epoch and a later call
    with the same config resumes after the last finished epoch.

    Raises:
        DataError: if the data do not fit together or are too few to hold out a validation slice.
    """
    data.check()
    if config.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    hp = effective_hyperparameters(config)
    _seed_everything(config.seed)
    fit_idx, val_idx = _validation_split(data.y_train, config.validation_split, config.seed)
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx].astype("float32")

    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    restored = _load_checkpoint(directory, config)
    if restored is not None:
        model, state = restored
        logger.info("resuming after epoch %d from %s", state["epoch"] + 1, directory)
    else:
        model = _compiled_model(config, hp, data, fit_idx)
        state = {"config": to_dict(config), "epoch": -1, "history": [], "best_val_loss": None, "best_epoch": -1, "wait": 0}
    resumed_from = state["epoch"] + 1 if restored is not None else None
    best_weights = None
    if directory is not None and (directory / CHECKPOINT_BEST).is_file() and restored is not None:
        best_weights = directory / CHECKPOINT_BEST

    started = time.perf_counter()
    for epoch in range(state["epoch"] + 1, hp["epochs"]):
        if state["wait"] >= max(config.patience, 1):
            break  # `patience` epochs in a row without a lower validation loss (0 counts as 1)
        order = fit_idx[np.random.default_rng([config.seed, epoch]).permutation(len(fit_idx))]
        _reseed_random_layers(model, config.seed, epoch)
        fitted = model.fit(
            data.x_train[order],
            data.y_train[order].astype("float32"),
            batch_size=hp["batch_size"],
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=(x_val, y_val),
            verbose=verbose,
        )
        metrics = {name: float(values[-1]) for name, values in fitted.history.items()}
        state["history"].append({"epoch": epoch + 1, **metrics})
        if tracker is not None:
            tracker.log_epoch(epoch, metrics)
        if state["best_val_loss"] is None or metrics["val_loss"] < state["best_val_loss"]:
            state.update(best_val_loss=metrics["val_loss"], best_epoch=epoch, wait=0)
            if directory is not None:
                with atomic_path(directory / CHECKPOINT_BEST, suffix=".weights.h5") as tmp:
                    model.save_weights(tmp)
                best_weights = directory / CHECKPOINT_BEST
            else:
                best_weights = model.get_weights()
        else:
            state["wait"] += 1
        state["epoch"] = epoch
        if directory is not None:
            _save_checkpoint(directory, model, state)
    seconds = time.perf_counter() - started

    if isinstance(best_weights, Path):
        model.load_weights(best_weights)
    elif best_weights is not None:
        model.set_weights(best_weights)
    return TrainResult(
        model=model,
        raw_model=raw_string_model(model, data.vocabulary, data.max_length),
        history=state["history"],
        hyperparameters=hp,
        best_epoch=state["best_epoch"] + 1,
        train_seconds=seconds,
        resumed_from_epoch=resumed_from,
    )


def clear_checkpoints(checkpoint_dir: str | os.PathLike[str]) -> None:
    """Remove a finished run's checkpoint files from ``checkpoint_dir``."""
    for name in (CHECKPOINT_MODEL, CHECKPOINT_BEST, CHECKPOINT_STATE):
        path = Path(checkpoint_dir) / name
        if path.is_file():
            path.unlink()


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` as a ``.keras`` file, atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Return the model saved at ``path`` (a raw-string ``.keras`` model reloads with its vocabulary).

    Raises:
        DataError: if the file does not exist.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: model file not found")
    return keras.models.load_model(path)


def predict(model: keras.Model, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Return P(positive) for each raw review text, as a float array of len(texts)."""
    import tensorflow as tf

    if len(texts) == 0:
        return np.zeros((0,), dtype=np.float32)
    probabilities = model.predict(tf.reshape(tf.constant(list(texts)), [-1, 1]), batch_size=batch_size, verbose=0)
    return np.asarray(probabilities, dtype=np.float32).reshape(-1)


__all__ = [
    "PreparedData",
    "TrainResult",
    "clear_checkpoints",
    "effective_hyperparameters",
    "load_model",
    "load_prepared",
    "predict",
    "raw_string_model",
    "run",
    "save_model",
    "save_split",
]
