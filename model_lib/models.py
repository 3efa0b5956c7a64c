"""Model builders and their layers. Each builder takes the GloVe matrix for the vocabulary and its
own hyperparameters, and returns an uncompiled Keras model from int id sequences to P(positive);
:mod:`model_lib.registry` names them (with their defaults, data checks and fitted inputs).

Models use only backend-agnostic Keras layers and ops (strings are handled before them), so the
same builders run on the TensorFlow and the JAX backends.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from model_lib import registry
from model_lib.config import MAX_NGRAM_BUCKETS
from model_lib.config import NGRAM_HASH_MULTIPLIER as _MULTIPLIER
from model_lib.registry import SEED_CNN_LENGTH

if TYPE_CHECKING:
    from model_lib.prepared import SplitRows

# Hashing constants for the n-gram ids. All arithmetic stays below 2**31 (int32 on every backend):
# ids < vocabulary size and hashes < buckets, so id * _MULTIPLIER and hash * _MULTIPLIER fit while
# buckets <= MAX_NGRAM_BUCKETS.


def seed_cnn(embedding_matrix: np.ndarray, *, max_length: int = SEED_CNN_LENGTH, dropout: float = 0.0, **_: Any) -> keras.Model:
    """Return the original project's CNN: trainable GloVe embedding, 3x Conv1D(128, 5) with max
    pooling 5/5/35, Dense(128), sigmoid.

    The architecture is unchanged. What changed is the training recipe (its defaults in
    :mod:`model_lib.registry`): the original Adam lr=0.01 for 3 epochs at batch 1024 ended at 0.50,
    0.59 and 0.86 test accuracy on three seeds (TensorFlow, CPU, measured before this port). Our
    defaults are lr=0.001 (clipnorm 1.0 kept), batch 128, up to 6 epochs with early stopping on the
    validation slice (more, smaller steps: about 140 updates per epoch at a tenth of the rate). Measured through the shipped path
    (``training.run``, TensorFlow on 2 CPU cores, benchmarks/results/quality_seed_cnn.json): 0.8388,
    0.8868 and 0.8930 on seeds 42/43/44; seed 42 stopped after 3 epochs with its best at epoch 1.
    The JAX run of benchmarks/models_jax.py (its own loop, one H100) gave 0.879, 0.890 and 0.887.

    Raises:
        ValueError: if ``max_length`` is not 1000 (the pooling sizes need exactly that length).
    """
    if max_length != SEED_CNN_LENGTH:
        raise ValueError(f"seed_cnn: max_length must be 1000 (pooling 5/5/35), got {max_length}")
    inputs = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(embedding_matrix.shape[0], embedding_matrix.shape[1], name="glove")(inputs)
    for pool in (5, 5, 35):
        x = keras.layers.Conv1D(128, 5, activation="relu")(x)
        x = keras.layers.MaxPooling1D(pool)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_positive")(x)
    model = keras.Model(inputs, outputs, name="seed_cnn")
    model.get_layer("glove").set_weights([embedding_matrix])
    return model


@keras.saving.register_keras_serializable(package="model_lib")
class HashedNgrams(keras.layers.Layer):
    """Maps id sequences to the ids of their distinct 1..order-grams; 0 marks padding and repeats.

    Unigram ids are the token ids; a 2-gram gets ``vocab_size + hash``, a 3-gram
    ``vocab_size + buckets + hash``. Each review's ids are sorted and repeats zeroed, so every n-gram
    counts once (binary features, as in NB-SVM).
    """

    def __init__(self, vocab_size: int, buckets: int, order: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < buckets <= MAX_NGRAM_BUCKETS:
            raise ValueError(f"ngram_buckets: expected 1..{MAX_NGRAM_BUCKETS}, got {buckets}")
        if not 1 <= order <= 3:
            raise ValueError(f"ngram_order: expected 1, 2 or 3, got {order}")
        self.vocab_size, self.buckets, self.order = int(vocab_size), int(buckets), int(order)

    @property
    def id_count(self) -> int:
        """Return how many distinct ids the layer can emit (the embedding's row count)."""
        return self.vocab_size + self.buckets * (self.order - 1)

    def call(self, ids: Any) -> Any:
        ids = ops.cast(ids, "int32")
        parts = [ids]
        hashed, valid = ids, ids > 0
        for n in range(2, self.order + 1):
            nxt = ids[:, n - 1 :]
            hashed = ops.mod(ops.mod(hashed[:, :-1] * _MULTIPLIER, self.buckets) + nxt, self.buckets)
            valid = ops.logical_and(valid[:, :-1], nxt > 0)
            offset = self.vocab_size + self.buckets * (n - 2)
            parts.append(ops.where(valid, hashed + offset, 0))
        ngrams = ops.sort(ops.concatenate(parts, axis=1), axis=-1)
        repeat = ops.concatenate([ops.zeros_like(ngrams[:, :1], dtype="bool"), ngrams[:, 1:] == ngrams[:, :-1]], axis=1)
        return ops.where(repeat, 0, ngrams)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size, "buckets": self.buckets, "order": self.order}


def distinct_ngram_ids(ids: Iterable[np.ndarray], vocab_size: int, buckets: int, order: int) -> list[np.ndarray]:
    """Return, per row of ``ids`` (padded rows, or the unpadded id lists of a split), the distinct
    non-zero ids :class:`HashedNgrams` emits (NumPy twin)."""
    rows = []
    for row in ids:
        row = np.asarray(row, dtype=np.int64)
        row = row[row > 0]  # padding is at the front and never inside a review
        parts = [row]
        hashed = row
        for n in range(2, order + 1):
            hashed = ((hashed[:-1] * _MULTIPLIER) % buckets + row[n - 1 :]) % buckets
            parts.append(hashed + vocab_size + buckets * (n - 2))
        rows.append(np.unique(np.concatenate(parts)))
    return rows


def nb_log_count_ratios(
    ids: Iterable[np.ndarray],
    labels: np.ndarray,
    vocab_size: int,
    buckets: int,
    order: int,
    *,
    alpha: float = 1.0,
    min_count: int = 2,
) -> np.ndarray:
    """Return the Naive-Bayes log-count ratio of each n-gram id; 0 for ids in fewer than
    ``min_count`` reviews (and for padding).

    r = log((p / |p|_1) / (q / |q|_1)), with p and q the alpha-smoothed counts of reviews holding the
    n-gram among positive and negative reviews (Wang & Manning, 2012). ``ids`` (padded rows or
    unpadded id lists, one per label) is read once, a chunk of reviews at a time: memory holds the
    two count tables, not a matrix of every review's n-grams.
    """
    positive, negative = nb_review_counts(ids, labels, vocab_size, buckets, order)
    return _ratios(positive, negative, alpha=alpha, min_count=min_count)


def nb_review_counts(
    ids: Iterable[np.ndarray], labels: np.ndarray, vocab_size: int, buckets: int, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (positive, negative): how many positive and how many negative reviews hold each n-gram
    id (float64 of whole numbers), read as :func:`nb_log_count_ratios` reads ``ids``. Counts of
    disjoint sets of reviews add up to those of their union (how hosts holding shards combine them)."""
    labels = np.asarray(labels)
    size = vocab_size + buckets * (order - 1)
    positive, negative = np.zeros(size, np.float64), np.zeros(size, np.float64)
    iterator, start = iter(ids), 0
    while chunk := list(itertools.islice(iterator, _COUNT_CHUNK)):
        rows = distinct_ngram_ids(chunk, vocab_size, buckets, order)
        columns = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        is_positive = np.repeat(labels[start : start + len(chunk)] == 1, [len(row) for row in rows])
        positive += np.bincount(columns[is_positive], minlength=size)
        negative += np.bincount(columns[~is_positive], minlength=size)
        start += len(chunk)
    return positive, negative


_COUNT_CHUNK = 4096  # reviews whose n-grams are counted at a time


def _nb_ratios(binary: Any, labels: np.ndarray, *, alpha: float, min_count: int) -> np.ndarray:
    positive = np.asarray(binary[labels == 1].sum(axis=0), dtype=np.float64).ravel()
    negative = np.asarray(binary[labels != 1].sum(axis=0), dtype=np.float64).ravel()
    return _ratios(positive, negative, alpha=alpha, min_count=min_count)


def _ratios(positive: np.ndarray, negative: np.ndarray, *, alpha: float, min_count: int) -> np.ndarray:
    """Return the log-count ratios from the review counts of each id among positive and negative reviews."""
    kept = (positive + negative) >= min_count
    kept[0] = False
    p, q = positive + alpha, negative + alpha
    ratios = np.log((p / p[kept].sum()) / (q / q[kept].sum()))
    ratios[~kept] = 0.0
    return ratios.astype(np.float32)


@keras.saving.register_keras_serializable(package="model_lib")
class MaskedSum(keras.layers.Layer):
    """Sums per-id weights (batch, ids, 1) over ids, skipping id 0 (padding and repeats).

    With ``reference`` set, the sum is scaled by sqrt(reference / ids summed): the logit of an
    l2-normalised binary feature vector, on the scale of a plain sum over ``reference`` ids. A
    one-line text and a long review then give logits of the same size.
    """

    def __init__(self, reference: float | None = None, power: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reference = None if reference is None else float(reference)
        self.power = float(power)

    def call(self, weights: Any, ids: Any) -> Any:
        present = ops.cast(ops.expand_dims(ids > 0, -1), weights.dtype)
        total = ops.sum(weights * present, axis=1)
        if self.reference is not None:
            count = ops.clip(ops.sum(present, axis=1), 1.0, self.reference)
            total = total * ops.power(self.reference / count, self.power)
        return total

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reference": self.reference, "power": self.power}


@keras.saving.register_keras_serializable(package="model_lib")
class MaskedMean(keras.layers.Layer):
    """Averages token vectors (batch, length, dim) over non-padding positions."""

    def call(self, vectors: Any, ids: Any) -> Any:
        present = ops.cast(ops.expand_dims(ids > 0, -1), vectors.dtype)
        return ops.sum(vectors * present, axis=1) / ops.maximum(ops.sum(present, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="model_lib")
class LogLength(keras.layers.Layer):
    """Returns log(1 + tokens) of each id sequence (padding not counted), shape (batch, 1)."""

    def call(self, ids: Any) -> Any:
        return ops.log1p(ops.sum(ops.cast(ids > 0, "float32"), axis=1, keepdims=True))


def ngram_glove(
    embedding_matrix: np.ndarray,
    *,
    max_length: int = 1000,
    dropout: float = 0.3,
    ngram_buckets: int = 2097143,
    ngram_order: int = 3,
    ngram_weights: np.ndarray | None = None,
    ngram_scale: float = 0.01,
    length_reference: float | None = 256.0,
    length_power: float = 0.5,
    **_: Any,
) -> keras.Model:
    """Return the default model: an NB-weighted binary 1..3-gram linear branch plus a GloVe bag branch.

    - Linear branch: each distinct hashed n-gram of a review has one weight, initialised to
      ``ngram_scale`` times its Naive-Bayes log-count ratio on the training split (NB-SVM's feature
      scaling, as a starting point rather than a fixed scale); the weights of the review's n-grams
      are summed. Dropout removes whole n-grams at random. A text with fewer than
      ``length_reference`` distinct n-grams has its sum scaled by (length_reference / n-grams) **
      ``length_power`` (an l2-normalised binary vector for power 0.5): one-line texts get logits on
      the scale of reviews instead of ones as many times smaller as they have fewer n-grams; reviews
      keep the plain sum.
    - GloVe branch: the review's token vectors (trainable, GloVe-initialised) averaged over the
      review, then one logistic unit.
    - A length term: a learned multiple of log(1 + tokens).
    The logits are added; the output is P(positive). Training feeds random short windows of the
    reviews too (``crop_share``), and after training the model is put in an ensemble with two NB-SVM
    logistic regressions (:func:`fit_nb_view`, :func:`with_views`); both are chosen by the short-text
    table of benchmarks/quality.py.

    Args:
        embedding_matrix: (vocab ids, dim) GloVe matrix for the vocabulary (ids 0/1: padding/OOV).
        ngram_weights: the NB log-count ratios from :func:`nb_log_count_ratios`; zeros if None.
        length_reference: None sums the n-gram weights of every text as they are.
    """
    vocab_size = embedding_matrix.shape[0]
    inputs = keras.Input(shape=(max_length,), dtype="int32", name="token_ids")

    ngrams_layer = HashedNgrams(vocab_size, ngram_buckets, ngram_order, name="ngrams")
    ngram_ids = ngrams_layer(inputs)
    weights = keras.layers.Embedding(ngrams_layer.id_count, 1, embeddings_initializer="zeros", name="ngram_weights")(ngram_ids)
    # n-grams seen in fewer than 2 training reviews (ratio exactly 0) stay switched off by this
    # frozen 0/1 gate: otherwise each review's unique n-grams memorise its label within one epoch.
    gate = keras.layers.Embedding(ngrams_layer.id_count, 1, embeddings_initializer="ones", trainable=False, name="ngram_active")(
        ngram_ids
    )
    weights = keras.layers.Multiply(name="active_weights")([weights, gate])
    weights = keras.layers.Dropout(dropout, name="ngram_dropout")(weights)
    linear_logit = MaskedSum(length_reference, length_power, name="linear_logit")(weights, ngram_ids)

    vectors = keras.layers.Embedding(vocab_size, embedding_matrix.shape[1], name="glove")(inputs)
    bag = MaskedMean(name="glove_bag")(vectors, inputs)
    glove_logit = keras.layers.Dense(1, name="glove_logit")(bag)

    # Lets the intercept depend on the text's length: short texts and reviews are judged apart.
    length_logit = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="length_logit")(
        LogLength(name="log_length")(inputs)
    )
    logit = keras.layers.Add(name="logit")([linear_logit, glove_logit, length_logit])
    outputs = keras.layers.Activation("sigmoid", name="p_positive")(logit)
    model = keras.Model(inputs, outputs, name="ngram_glove")
    # Weights are set after building, not through Constant initialisers: those would copy the whole
    # matrices into the model's JSON config (slow to save, megabytes of text).
    model.get_layer("glove").set_weights([embedding_matrix])
    if ngram_weights is not None:
        model.get_layer("ngram_weights").set_weights([(ngram_weights * ngram_scale)[:, None].astype(np.float32)])
        model.get_layer("ngram_active").set_weights([(ngram_weights != 0).astype(np.float32)[:, None]])
    return model


def ngram_glove_fitted(hyperparameters: Mapping[str, Any], fit: SplitRows, vocab_size: int) -> dict[str, Any]:
    """Return what :func:`ngram_glove` needs fitted on the fit rows ``fit``: its ``ngram_weights``,
    the NB log-count ratios of :func:`nb_log_count_ratios`, of the counts of every host's rows when
    each host holds some (``fit.across_hosts``)."""
    buckets, order = hyperparameters["ngram_buckets"], hyperparameters["ngram_order"]
    positive, negative = nb_review_counts(fit.rows(), fit.labels, vocab_size, buckets, order)
    positive, negative = fit.across_hosts(positive), fit.across_hosts(negative)
    return {"ngram_weights": _ratios(positive, negative, alpha=1.0, min_count=2)}


@dataclasses.dataclass(frozen=True)
class LinearView:
    """An NB-SVM-style logistic regression (Wang & Manning, 2012) on the hashed n-grams, as two
    per-id tables and an intercept: a second, linear model for the ensemble.

    Its features are a text's binary n-grams scaled by their Naive-Bayes log-count ratios r and
    l2-normalised. For a text with distinct n-gram ids J: logit = sum(weights[J]) /
    sqrt(sum(squares[J])) + intercept, with weights = coefficient * r and squares = r**2. Ids seen in
    fewer than 2 of the fitted texts have r = 0 and drop out of both sums (for the view fitted on
    reviews and their crops, a review and its own crop count as 2 texts: measured, counting reviews
    only changed accuracy by at most 0.3 points either way on any cut of 3 seeds).
    """

    weights: np.ndarray
    squares: np.ndarray
    intercept: float


# Rows of distinct n-gram ids made at once by ngram_matrix: their int64 arrays last only while one
# chunk is turned into the matrix's int32 columns.
_MATRIX_CHUNK_ROWS = 1000
# Rows of the matrix read at once by _nb_features: its temporaries stay a few MB.
_FEATURE_BLOCK_ROWS = 2000


def ngram_matrix(ids: Iterable[np.ndarray], vocab_size: int, buckets: int, order: int) -> Any:
    """Return the binary (texts, n-gram ids) SciPy CSR matrix of the distinct n-gram ids of each
    row of ``ids`` (see :func:`distinct_ngram_ids`)."""
    from scipy import sparse

    size = vocab_size + buckets * (order - 1)
    column_type = np.int32 if size <= np.iinfo(np.int32).max else np.int64  # what the CSR keeps (SciPy's choice)
    texts = iter(ids)
    chunks, lengths = [], []
    # A chunk of texts at a time: every text's int64 id array alive at once, then their int64
    # concatenation, would take twice the matrix's columns again (and leave the heap fragmented).
    while rows := distinct_ngram_ids(itertools.islice(texts, _MATRIX_CHUNK_ROWS), vocab_size, buckets, order):
        lengths.append(np.array([len(r) for r in rows], dtype=np.int64))
        chunks.append(np.concatenate(rows).astype(column_type))
    pointers = np.cumsum(np.concatenate([[0], *lengths]), dtype=np.int64)
    columns = np.empty(int(pointers[-1]), dtype=column_type)
    chunks.reverse()
    filled = 0
    while chunks:  # each chunk freed once copied: the columns are never held twice
        chunk = chunks.pop()
        columns[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
        del chunk
    return sparse.csr_matrix((np.ones(len(columns), np.float32), columns, pointers), shape=(len(pointers) - 1, size))


def fit_nb_view(matrix: Any, labels: np.ndarray, *, c: float = 30.0, min_count: int = 2, overwrite: bool = False) -> LinearView:
    """Return the :class:`LinearView` fitted by scikit-learn's logistic regression (L2, ``C=c``) on
    the NB-scaled, l2-normalised rows of ``matrix``, the :func:`ngram_matrix` of the training texts.

    With ``overwrite`` the features are built in ``matrix``'s own arrays, which it then holds: one
    copy of the matrix fewer while the regression runs, and ``matrix`` is not to be used again.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    labels = np.asarray(labels)
    # Each id's count of positive (negative) texts as one matrix-vector product, not a sum over a
    # copy of those texts' rows: the same float32 additions in the same order (a 0 adds nothing).
    positive, negative = (np.asarray(side.astype(np.float32) @ matrix, np.float64).ravel() for side in (labels == 1, labels != 1))
    ratios = _ratios(positive, negative, alpha=1.0, min_count=min_count)
    used = np.flatnonzero(ratios)
    # normalize in place: a copy of the features would be freed only after it (scikit-learn keeps
    # float32 for the lbfgs solver, so the regression copies nothing either).
    features = normalize(_nb_features(matrix, ratios, overwrite=overwrite), copy=False)
    classifier = LogisticRegression(C=c, max_iter=3000).fit(features, labels)
    weights = np.zeros_like(ratios)
    weights[used] = classifier.coef_[0] * ratios[used]
    return LinearView(weights, ratios**2, float(classifier.intercept_[0]))


def _nb_features(matrix: Any, ratios: np.ndarray, *, overwrite: bool) -> Any:
    """Return the CSR matrix ``matrix[:, used].multiply(ratios[used])`` (``used``: the ids whose
    ratio is not 0), entry for entry and bit for bit, built a block of rows at a time into new
    arrays or, with ``overwrite``, into ``matrix``'s own."""
    from scipy import sparse

    kept = ratios != 0
    position = np.cumsum(kept) - 1  # an id's column among the used ids
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    # New arrays as long as the old: the tail past the features' entries is never written, so never
    # resident. In place, a block's entries go to positions at or before those they were read from.
    new_indices, new_data = (indices, data) if overwrite else (np.empty_like(indices), np.empty_like(data))
    new_indptr = np.zeros_like(indptr)
    rows = matrix.shape[0]
    for start in range(0, rows, _FEATURE_BLOCK_ROWS):
        stop = min(start + _FEATURE_BLOCK_ROWS, rows)
        first, last = indptr[start], indptr[stop]
        ids = indices[first:last]
        keep = kept[ids]
        ends = np.concatenate([[0], np.cumsum(keep)])[indptr[start + 1 : stop + 1] - first]
        new_indptr[start + 1 : stop + 1] = new_indptr[start] + ends
        ids = ids[keep]
        values = data[first:last][keep] * ratios[ids]
        written = new_indptr[start]
        new_indices[written : written + len(ids)] = position[ids]
        new_data[written : written + len(ids)] = values
    entries = int(new_indptr[-1])
    shape = (rows, int(kept.sum()))
    return sparse.csr_matrix((new_data[:entries], new_indices[:entries], new_indptr), shape=shape, copy=False)


@keras.saving.register_keras_serializable(package="model_lib")
class NormalizedLinearLogit(keras.layers.Layer):
    """A linear model's logit on l2-normalised features: sum(weights) / sqrt(sum(squares)) + intercept,
    over ids other than 0."""

    def __init__(self, intercept: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.intercept = float(intercept)

    def call(self, weights: Any, squares: Any, ids: Any) -> Any:
        present = ops.cast(ops.expand_dims(ids > 0, -1), weights.dtype)
        norm = ops.sqrt(ops.sum(squares * present, axis=1))
        return ops.sum(weights * present, axis=1) / ops.maximum(norm, 1e-6) + self.intercept

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "intercept": self.intercept}


@keras.saving.register_keras_serializable(package="model_lib")
class LogitMix(keras.layers.Layer):
    """P(positive) from a model's probability p and further logits z_i: sigmoid((1 - sum(w)) * logit(p)
    + sum(w_i * z_i))."""

    def __init__(self, view_weights: list[float] | tuple[float, ...] = (0.5,), **kwargs: Any) -> None:
        super().__init__(**kwargs)  # not named `weights`: Keras layers take that keyword for initial weights
        self.mix = [float(w) for w in view_weights]

    def call(self, probability: Any, *logits: Any) -> Any:
        p = ops.clip(probability, 1e-7, 1.0 - 1e-7)
        mixed = (1.0 - sum(self.mix)) * (ops.log(p) - ops.log1p(-p))
        for weight, logit in zip(self.mix, logits, strict=True):
            mixed = mixed + weight * logit
        return ops.sigmoid(mixed)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "view_weights": self.mix}


def with_views(model: keras.Model, views: list[tuple[LinearView, float]], *, buckets: int, order: int) -> keras.Model:
    """Return the ensemble of the trained ``model`` and the (view, weight) pairs: one model from id
    sequences to P(positive) whose logit is (1 - the weights' sum) times the model's plus each
    weight times its view's; ``model`` itself when ``views`` is empty.

    The views' tables are frozen; the ensemble is built after training, so checkpoints hold only the
    trained model.
    """
    if not views:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], dtype="int32", name="ensemble_token_ids")  # unique: the model has its own
    vocab_size = len(views[0][0].weights) - buckets * (order - 1)
    ngram_ids = HashedNgrams(vocab_size, buckets, order, name="view_ngrams")(inputs)
    logits, tables = [], []
    for number, (view, _) in enumerate(views, start=1):
        pair = [
            keras.layers.Embedding(len(view.weights), 1, trainable=False, name=f"view{number}_{part}")
            for part in ("weights", "squares")
        ]
        logits.append(
            NormalizedLinearLogit(view.intercept, name=f"view{number}_logit")(pair[0](ngram_ids), pair[1](ngram_ids), ngram_ids)
        )
        tables.append((pair, (view.weights, view.squares)))
    mix = LogitMix([weight for _, weight in views], name="ensemble_p_positive")  # names must differ from the model's
    ensemble = keras.Model(inputs, mix(model(inputs), *logits), name=f"{model.name}_ensemble")
    for pair, values in tables:
        for layer, table in zip(pair, values):
            layer.set_weights([table[:, None]])
    return ensemble


# CompactIds packs, for each block of 8 ids, (rows used before the block) << 8 | (the block's bitmap)
# in one int32: the index costs half a byte per id, and an id's row is one gather away.
_BLOCK_BITS = 3
_BLOCK = 1 << _BLOCK_BITS
_MAX_COMPACT_ROWS = (1 << 23) - 1  # what the 23 bits above the bitmap hold
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], np.int32)


@keras.saving.register_keras_serializable(package="model_lib")
class CompactIds(keras.layers.Layer):
    """Maps n-gram ids to the rows of tables that hold only the ids some table uses: 1 + the
    number of used ids below the id, for a used id, and 0 (a row of zeros) for any other id,
    padding and repeats included.

    Most of a hashed table's rows are n-grams seen in fewer than 2 training reviews, whose weights
    are 0: tables of the used rows are a third of the size and give the same sums, bit for bit.
    ``id_count`` is how many ids there are (:attr:`HashedNgrams.id_count`); set the index with
    :func:`compact_index`.
    """

    def __init__(self, id_count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.id_count = int(id_count)
        blocks = self.id_count // _BLOCK + 1
        self.index = self.add_weight(shape=(blocks,), dtype="int32", initializer="zeros", trainable=False, name="index")

    def call(self, ids: Any) -> Any:
        ids = ops.cast(ids, "int32")
        packed = ops.take(self.index, ops.right_shift(ids, _BLOCK_BITS))
        bitmap, before = ops.bitwise_and(packed, 255), ops.right_shift(packed, 8)
        offset = ops.bitwise_and(ids, _BLOCK - 1)
        used = ops.bitwise_and(ops.right_shift(bitmap, offset), 1) == 1
        below = ops.bitwise_and(bitmap, ops.left_shift(1, offset) - 1)
        return ops.where(used, before + ops.take(ops.convert_to_tensor(_POPCOUNT), below) + 1, 0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "id_count": self.id_count}


def compact_index(used: np.ndarray) -> np.ndarray:
    """Return the :class:`CompactIds` index of the bool mask ``used`` (one entry per id; id 0,
    padding, is never used).

    Raises:
        ValueError: if more ids are used than the index can count.
    """
    used = np.asarray(used, dtype=bool).copy()
    used[0] = False
    if int(used.sum()) > _MAX_COMPACT_ROWS:
        raise ValueError(f"CompactIds: at most {_MAX_COMPACT_ROWS} used ids, got {int(used.sum())}")
    blocks = len(used) // _BLOCK + 1
    padded = np.zeros(blocks * _BLOCK, dtype=bool)
    padded[: len(used)] = used
    bitmap = np.packbits(padded.reshape(blocks, _BLOCK), axis=1, bitorder="little").reshape(-1).astype(np.int32)
    before = np.concatenate([[0], np.cumsum(_POPCOUNT[bitmap])[:-1]]).astype(np.int32)
    return np.left_shift(before, 8) | bitmap


def _used_ids(tables: Iterable[np.ndarray]) -> np.ndarray:
    """Return the bool mask of the ids whose row has any bit set in one of ``tables`` (1-D, of one length)."""
    tables = [np.asarray(table, np.float32).reshape(-1) for table in tables]
    used = np.zeros(len(tables[0]), dtype=bool)
    for table in tables:
        used |= table.view(np.uint32) != 0  # by bits: a -0.0 weight is kept as it is
    used[0] = False
    return used


def ngram_glove_shipped(model: keras.Model, views: list[tuple[LinearView, float]], *, buckets: int, order: int) -> keras.Model:
    """Return the model to ship of the trained :func:`ngram_glove` ``model`` and its (view,
    weight) pairs: the P(positive) of :func:`with_views` bit for bit, as one graph whose per-n-gram
    tables hold only the n-grams some table uses (:class:`CompactIds`), with no optimizer state.

    The gate is folded into the n-gram weights (a switched-off n-gram's weight is 0 and never
    trains), the n-gram ids are hashed once for the model and the views, and dropout (the identity
    once trained) is left out.

    Raises:
        ValueError: if ``model`` is not an ngram_glove model (a layer it has is missing).
    """
    names = ("ngrams", "ngram_weights", "ngram_active", "linear_logit", "glove", "glove_logit", "length_logit")
    try:
        layers = {name: model.get_layer(name) for name in names}
    except ValueError as exc:
        raise ValueError(f"ngram_glove_shipped: {model.name!r} is not an ngram_glove model ({exc})") from None
    weights = (layers["ngram_weights"].get_weights()[0] * layers["ngram_active"].get_weights()[0]).reshape(-1)
    view_tables = [(view.weights, view.squares) for view, _ in views]
    used = _used_ids([weights, *(table for pair in view_tables for table in pair)])
    rows_used = int(used.sum())

    def compact(table: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.asarray(table, np.float32).reshape(-1)[used]]).astype(np.float32)[:, None]

    inputs = keras.Input(shape=model.input_shape[1:], dtype="int32", name="token_ids")
    ngrams = HashedNgrams.from_config(layers["ngrams"].get_config())
    ngram_ids = ngrams(inputs)
    id_rows = CompactIds(ngrams.id_count, name="ngram_rows")
    rows = id_rows(ngram_ids)
    tables: list[tuple[keras.layers.Layer, list[np.ndarray]]] = [(id_rows, [compact_index(used)])]

    def table(name: str, values: np.ndarray) -> Any:
        layer = keras.layers.Embedding(rows_used + 1, 1, trainable=False, name=name)
        tables.append((layer, [compact(values)]))
        return layer(rows)

    linear = MaskedSum.from_config(layers["linear_logit"].get_config())(table("ngram_weights", weights), ngram_ids)
    glove_matrix = layers["glove"].get_weights()[0]
    glove = keras.layers.Embedding(glove_matrix.shape[0], glove_matrix.shape[1], name="glove")
    glove_logit = keras.layers.Dense(1, name="glove_logit")
    length_logit = keras.layers.Dense(1, use_bias=False, name="length_logit")
    logit = keras.layers.Add(name="logit")(
        [
            linear,
            glove_logit(MaskedMean(name="glove_bag")(glove(inputs), inputs)),
            length_logit(LogLength(name="log_length")(inputs)),
        ]
    )
    probability = keras.layers.Activation("sigmoid", name="p_positive")(logit)
    if views:
        logits = [
            NormalizedLinearLogit(view.intercept, name=f"view{number}_logit")(
                table(f"view{number}_weights", view.weights), table(f"view{number}_squares", view.squares), ngram_ids
            )
            for number, (view, _) in enumerate(views, start=1)
        ]
        probability = LogitMix([weight for _, weight in views], name="ensemble_p_positive")(probability, *logits)
    shipped = keras.Model(inputs, probability, name=f"{model.name}_ensemble" if views else model.name)
    for layer, values in tables:
        layer.set_weights(values)
    for name, layer in (("glove", glove), ("glove_logit", glove_logit), ("length_logit", length_logit)):
        layer.set_weights(layers[name].get_weights())
    return shipped


def without_optimizer(model: keras.Model) -> keras.Model:
    """Return a copy of the trained functional ``model`` with its weights and no optimizer state
    (what a compiled model would save beside its weights: Adam keeps two slots per weight)."""
    copy = model.__class__.from_config(model.get_config())  # clone_model would compile the copy as well
    copy.set_weights(model.get_weights())
    return copy


def shipped_as_trained(model: keras.Model, views: list[tuple[LinearView, float]], *, buckets: int, order: int) -> keras.Model:
    """Return the model to ship of a trained ``model`` of any kind: :func:`with_views` of its copy
    without optimizer state (:func:`without_optimizer`) and the (view, weight) pairs."""
    return with_views(without_optimizer(model), views, buckets=buckets, order=order)


def build_model(name: str, embedding_matrix: np.ndarray, **hyperparameters: Any) -> keras.Model:
    """Return the uncompiled model ``name`` (a :mod:`model_lib.registry` entry) built on ``embedding_matrix``.

    Raises:
        ConfigError: (a ValueError) if ``name`` is not a registered model.
    """
    return registry.get(name).build(embedding_matrix, **hyperparameters)  # type: ignore[no-any-return]
