"""Using a trained model: load a saved ``.keras`` file and score raw texts or encoded splits."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

# Registers our layers (TextEncoder, HashedNgrams, ...) so that a saved model can be loaded.
import model_lib.models
import model_lib.text
from model_lib.errors import DataError
from model_lib.prepared import Split


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Return the model saved at ``path`` (a raw-string ``.keras`` model reloads with its vocabulary).

    Raises:
        DataError: if the file does not exist, or is not a ``.keras`` model Keras can load (a text
            file, a truncated download, a folder): the message names the file and Keras' reason.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):  # a .keras file is a zip archive (config.json, model.weights.h5)
        raise DataError(f"{path}: expected a .keras model file (a zip archive), got {_first_bytes(path)!r}...")
    try:
        return keras.models.load_model(path)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: expected a .keras model file Keras can load, got {type(exc).__name__}: {reason}") from None


def load_raw_string_model(path: str | os.PathLike[str]) -> keras.Model:
    """Return the raw-string model saved at ``path`` (what ``predict`` scores review texts with).

    Raises:
        DataError: as :func:`load_model`, and for a model that does not take one string per review
            and return one P(positive) (an id-sequence model, another project's model).
    """
    model = load_model(path)
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or inputs[0].dtype != "string" or len(outputs) != 1 or tuple(outputs[0].shape)[1:] != (1,):
        shapes = f"inputs {[(t.dtype, tuple(t.shape)) for t in inputs]}, outputs {[tuple(t.shape) for t in outputs]}"
        raise DataError(f"{path}: expected a raw-string model (one string input, one P(positive) output), got {shapes}")
    return model


def _first_bytes(path: str | os.PathLike[str], count: int = 16) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(count)


def core_model(raw_model: keras.Model) -> keras.Model:
    """Return the id-sequence model inside a raw-string model (what scores encoded splits).

    Raises:
        ValueError: if ``raw_model`` holds no inner model.
    """
    for layer in raw_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{raw_model.name}: not a raw-string model (no inner model)")


def predict(model: keras.Model, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Return P(positive) for each raw review text, as a float array of len(texts).

    Raises:
        DataError: if a text is empty or blank (its "probability" would be the model's bias alone).
    """
    import tensorflow as tf

    blank = next((i for i, text in enumerate(texts) if not text.strip()), None)
    if blank is not None:
        raise DataError(f"review {blank + 1}: expected some words, got {texts[blank]!r}")
    if len(texts) == 0:
        return np.zeros((0,), dtype=np.float32)
    probabilities = model.predict(tf.reshape(tf.constant(list(texts)), [-1, 1]), batch_size=batch_size, verbose=0)
    return np.asarray(probabilities, dtype=np.float32).reshape(-1)


def predict_encoded(model: keras.Model, ids: np.ndarray | Split, batch_size: int = 512) -> np.ndarray:
    """Return P(positive) for encoded reviews (padded id rows, or an encoded split, padded a chunk
    at a time), with a raw-string model or the id-sequence model itself.

    Raises:
        DataError: if the reviews are not of the model's length.
    """
    if isinstance(ids, Split):
        chunk = batch_size * 16  # whole batches: the same batches, the same scores, as the split at once
        scores = [np.zeros(0, np.float32)]
        for start in range(0, len(ids), chunk):
            scores.append(predict_encoded(model, ids.padded(np.arange(start, min(start + chunk, len(ids)))), batch_size))
        return np.concatenate(scores)
    if ids.ndim != 2:
        raise DataError(f"expected encoded reviews of shape (n, length), got {ids.shape}")
    if model.inputs[0].dtype == "string":  # a raw-string model: score with the id model inside
        model = core_model(model)
    length = model.input_shape[-1]
    if length is not None and ids.shape[1] != length:
        raise DataError(f"expected encoded reviews of {length} tokens (the model's length), got {ids.shape[1]}")
    return np.asarray(model.predict(ids, batch_size=batch_size, verbose=0), dtype=np.float32).reshape(-1)


def model_encoding(model: keras.Model) -> tuple[list[str], int] | None:
    """Return (vocabulary tokens, max length) of the text encoder inside a raw-string model; None
    for a model without one (an id-sequence model)."""
    for layer in model.layers:
        if isinstance(layer, model_lib.text.TextEncoder):
            return list(layer.vocabulary), layer.max_length
    return None
