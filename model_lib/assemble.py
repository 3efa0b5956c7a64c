"""Assemble the model that ships from the trained one: the NB-SVM views fitted beside it (the
ensemble: the registry entry's ``shipper``, :func:`model_lib.models.ngram_glove_shipped` for the
default model) and the wrapper that takes raw review strings.

This runs once, after the training loop, on the best weights; nothing here is checkpointed (the
views are a deterministic fit of the training reviews).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import zlib
from typing import Any

import keras
import numpy as np

from model_lib import registry
from model_lib.augment import cropped
from model_lib.config import TrainConfig
from model_lib.models import LinearView, fit_nb_view, ngram_matrix
from model_lib.prepared import PreparedData

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Shipped:
    """The assembled models and the time spent fitting the views."""

    model: keras.Model  # takes id sequences
    raw_model: keras.Model | None  # takes raw strings; None off the TensorFlow backend (its string ops are TensorFlow's)
    seconds: float


def has_views(hp: dict[str, Any]) -> bool:
    """Return whether the hyperparameters ``hp`` give the shipped model NB-SVM views (a weight above 0)."""
    return bool(hp["nb_view_weight"] > 0 or hp["nb_crop_view_weight"] > 0)


def views(
    data: PreparedData, config: TrainConfig, hp: dict[str, Any], sample: tuple[np.ndarray, np.ndarray] | None = None
) -> list[tuple[LinearView, float]]:
    """Return the ensemble's (view, weight) pairs: an NB-SVM fitted on the training reviews, and one
    fitted on every review once whole and once cropped (so that it learns short texts too).

    A view whose weight (``nb_view_weight``, ``nb_crop_view_weight`` in ``hp``) is 0 is left out.
    The views are fitted on at most ``config.nb_view_reviews`` training reviews (above it, a sample
    drawn from (seed, "views"), kept in split order): their sparse matrices and the logistic
    regression grow with the reviews, and memory must not. The crops are drawn from (seed, epochs),
    so the same config fits the same views. ``sample`` is those reviews padded, and their labels,
    when this process does not hold them all (a host of a sharded split: model_lib.shards).
    """
    if sample is None:
        rows = view_rows(len(data.train), config.nb_view_reviews, config.seed)
        sample = (data.train.padded(rows), data.train.labels[rows])
    x, y = sample
    del sample  # the padded reviews are freed once their matrix is made (unless the caller holds them)
    vocab, buckets, order = data.vocabulary.size, config.ngram_buckets, config.ngram_order
    plain, crop = hp["nb_view_weight"] > 0, hp["nb_crop_view_weight"] > 0
    if crop:
        from scipy import sparse

        crops = cropped(x, 1.0, np.random.default_rng([config.seed, int(hp["epochs"])]))
        # The reviews, then their crops: vstack of the two matrices, made as one, so neither half
        # nor the stack is held beside it. The reviews' matrix is a view of its first rows.
        matrix = ngram_matrix(itertools.chain(x, crops), vocab, buckets, order)
        del crops
        end = matrix.indptr[len(x)]
        parts = (matrix.data[:end], matrix.indices[:end], matrix.indptr[: len(x) + 1])
        whole = sparse.csr_matrix(parts, shape=(len(x), matrix.shape[1]), copy=False)
    else:
        whole = ngram_matrix(x, vocab, buckets, order)
    del x
    fitted = []
    if plain:
        # Overwritten only when no crop view reads its rows afterwards.
        fitted.append((fit_nb_view(whole, y, overwrite=not crop), hp["nb_view_weight"]))
    del whole
    if crop:
        fitted.append((fit_nb_view(matrix, np.concatenate([y, y]), overwrite=True), hp["nb_crop_view_weight"]))
        del matrix
    return fitted


def view_rows(reviews: int, most: int, seed: int) -> np.ndarray:
    """Return the rows of the training split the NB-SVM views are fitted on: all of them up to
    ``most``, else ``most`` of them drawn with ``seed``, in split order."""
    if reviews <= most:
        return np.arange(reviews)
    rng = np.random.default_rng([seed, zlib.crc32(b"views")])
    return np.sort(rng.choice(reviews, size=most, replace=False))


def shipped_model(
    model: keras.Model,
    data: PreparedData,
    config: TrainConfig,
    hp: dict[str, Any],
    *,
    fit_views: bool = True,
    view_sample: tuple[np.ndarray, np.ndarray] | None = None,
) -> Shipped:
    """Return the model to ship built around the trained ``model`` (a model of this process alone).

    With ``fit_views`` and a view weight above 0 the NB-SVM views join ``model`` in an ensemble
    (a cluster's workers pass False: their models are not kept), fitted on ``view_sample`` when
    given (see :func:`views`). On the TensorFlow backend the
    raw-string model wraps the result; elsewhere ``raw_model`` is None and
    :func:`model_lib.export.save_raw_string_model` builds it in a TensorFlow process.
    """
    from model_lib.export import raw_string_model

    seconds, fitted = 0.0, list[tuple[LinearView, float]]()
    if fit_views and has_views(hp):
        began = time.perf_counter()
        fitted = views(data, config, hp, view_sample)
        seconds = time.perf_counter() - began
        logger.info("NB-SVM views fitted in %.1f s", seconds)
    model = registry.get(config.model).shipped(model, fitted, buckets=config.ngram_buckets, order=config.ngram_order)
    raw = raw_string_model(model, data.vocabulary, data.max_length) if keras.backend.backend() == "tensorflow" else None
    return Shipped(model, raw, seconds)


__all__ = ["Shipped", "has_views", "shipped_model", "view_rows", "views"]
