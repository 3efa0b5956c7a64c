"""The model users get: the trained id-sequence model wrapped to take raw review strings, saved as
one ``.keras`` file (vocabulary and standardisation inside)."""

from __future__ import annotations

import os

import keras

from model_lib._io import atomic_path
from model_lib.text import Vocabulary


def raw_string_model(model: keras.Model, vocabulary: Vocabulary, max_length: int) -> keras.Model:
    """Return a model taking raw review strings, shape (batch, 1) like a one-column table, and
    returning P(positive) per review, shape (batch, 1)."""
    texts = keras.Input(shape=(1,), dtype="string", name="review")
    ids = vocabulary.encoder(max_length)(texts)
    return keras.Model(texts, model(ids), name=f"{model.name}_raw_text")


def core_model(raw_model: keras.Model) -> keras.Model:
    """Return the id-sequence model inside a raw-string model (what scores encoded splits).

    Raises:
        ValueError: if ``raw_model`` holds no inner model.
    """
    for layer in raw_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{raw_model.name}: not a raw-string model (no inner model)")


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` as a ``.keras`` file, atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
