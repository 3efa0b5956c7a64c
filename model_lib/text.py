"""Tokenisation the GloVe way, the vocabulary (plain text, no pickle) and encoding.

GloVe 6B was trained on Stanford-tokenised text: "don't" is "do n't", "it's" is "it 's", and
punctuation marks are tokens of their own. The default Keras standardisation strips punctuation and
keeps "don't" whole, which GloVe does not know; :func:`glove_standardize` splits text GloVe's way so
that the split on whitespace yields GloVe's tokens. The same TensorFlow ops run when the vocabulary is
fitted, when splits are encoded and inside the exported raw-string model, so they cannot drift apart.

Importing this module imports TensorFlow (the serialisable layers below must be registered for
``keras.models.load_model`` to find them).
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model_lib._io import atomic_path
from model_lib.embeddings import FIRST_TOKEN_ID, PAD_ID
from model_lib.errors import DataError

OOV_TOKEN = "[UNK]"
_BATCH = 2048
_ENCODE_BATCH = 1024  # small enough that every core gets batches, large enough to amortise each call


@keras.saving.register_keras_serializable(package="model_lib")
def glove_standardize(texts: tf.Tensor) -> tf.Tensor:
    """Return ``texts`` lowercased and spaced so that splitting on whitespace gives GloVe tokens.

    Unicode line and paragraph separators (U+0085, U+2028, U+2029) become spaces: a vocabulary token
    holding one would break the line-based vocabulary file Keras saves inside ``.keras`` models.
    """
    x = tf.strings.lower(texts, encoding="utf-8")
    x = tf.strings.regex_replace(x, r"<br\s*/?>", " ")
    # Only the rare separators: a class that also matches every plain space costs 8x more, and the
    # whitespace split below skips repeated spaces anyway.
    x = tf.strings.regex_replace(x, r"[\t\n\r\f\v\x{85}\x{a0}\x{2028}\x{2029}]", " ")
    x = tf.strings.join([" ", x, " "])
    x = tf.strings.regex_replace(x, r"([^\pL\pN\s'])", r" \1 ")
    # Quotes: an apostrophe that opens or closes a word is a token; o'clock keeps its own.
    x = tf.strings.regex_replace(x, r"\s'(\S)", r" ' \1")
    x = tf.strings.regex_replace(x, r"(\S)'\s", r"\1 ' ")
    x = tf.strings.regex_replace(x, r"(\pL)(n't|'s|'re|'ve|'ll|'d|'m)\s", r"\1 \2 ")
    return x


class Vocabulary:
    """An ordered list of tokens: token ``tokens[i]`` has id ``i + 2`` (0 is padding, 1 is OOV)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        bad = [t for t in tokens if not t or any(c in t for c in "\n\r\x85\u2028\u2029 ") or t == OOV_TOKEN]
        if bad:
            raise DataError(f"vocabulary: token {bad[0]!r} is empty, reserved or holds whitespace")
        if len(set(tokens)) != len(tokens):
            seen: set[str] = set()
            duplicate = next(t for t in tokens if t in seen or seen.add(t))  # type: ignore[func-returns-value]
            raise DataError(f"vocabulary: token {duplicate!r} appears twice")
        self.tokens = tokens
        self._encoders: dict[int, TextEncoder] = {}  # one per length: encode() is called once per chunk

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    @property
    def size(self) -> int:
        """Return the number of ids, padding and OOV included (the embedding's row count)."""
        return len(self.tokens) + FIRST_TOKEN_ID

    @classmethod
    def fit(cls, texts: Iterable[str], *, max_size: int = 30000, min_count: int = 2) -> Vocabulary:
        """Return the ``max_size`` most frequent tokens of ``texts`` seen at least ``min_count`` times.

        ``texts`` is read once, a batch at a time (a generator over a file does not fill memory:
        only the token counts grow). Ties are broken by the token itself, so the same texts in any
        order give the same vocabulary.

        Raises:
            DataError: if ``texts`` is empty or no token is seen ``min_count`` times (a vocabulary
                of padding and OOV alone: every review would encode to the same ids).
        """
        counts: collections.Counter[bytes] = collections.Counter()
        seen = 0
        iterator = iter(texts)
        while batch := list(itertools.islice(iterator, _BATCH)):
            ragged = tf.strings.split(glove_standardize(tf.constant(batch)))
            counts.update(ragged.flat_values.numpy().tolist())
            seen += len(batch)
        if not seen:
            raise DataError("cannot fit a vocabulary on an empty training split")
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        if not ranked:
            raise DataError(
                f"vocabulary: no token appears at least {min_count} times in the {seen} training texts; "
                "expected a lower min_count"
            )
        return cls([token.decode("utf-8") for token, _ in ranked[:max_size]])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one token per line (UTF-8, "\\n" line ends), atomically."""
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(("\n".join(self.tokens) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Return the vocabulary saved at ``path``.

        Lines are split on "\\n" only: ``str.splitlines`` would also split on U+0085 and U+2028.

        Raises:
            DataError: if the file is missing, not UTF-8, holds no token, or a bad or repeated one.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise DataError(f"{path}: vocabulary: no tokens; expected one token per line")
        try:
            return cls(lines)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None

    def encoder(self, max_length: int) -> TextEncoder:
        """Return the Keras layer mapping raw strings to 'pre'-padded id sequences of ``max_length``."""
        return TextEncoder(vocabulary=self.tokens, max_length=max_length)

    def encode(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """Return int32 ids of shape (len(texts), max_length), padded and truncated at the front."""
        out = np.zeros((len(texts), max_length), dtype=np.int32)
        if not len(texts):
            return out
        # The string ops are single-threaded: tf.data maps batches on every core, in order. The
        # layer's ops are the exported model's, so the ids are the same as one batch at a time.
        # One encoder per length, reused: a new one per call (a lookup table and a traced map each)
        # is memory that stays, and prepare calls this once per chunk of a corpus.
        if max_length not in self._encoders:
            self._encoders[max_length] = self.encoder(max_length)
        encoder = self._encoders[max_length]
        batches = (
            tf.data.Dataset.from_tensor_slices(tf.constant(list(texts)))
            .batch(_ENCODE_BATCH)
            .map(encoder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        )
        start = 0
        for ids in batches:
            out[start : start + len(ids)] = ids.numpy()
            start += len(ids)
        return out


@keras.saving.register_keras_serializable(package="model_lib")
class TextEncoder(keras.layers.Layer):
    """Maps a batch of raw strings to int ids, 'pre'-padded/truncated to ``max_length``.

    Keras' TextVectorization (with :func:`glove_standardize` and the fixed vocabulary) does the
    lookup; the last ``max_length`` tokens are kept and padding goes in front, as the original
    project's ``pad_sequences`` did.
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.max_length = int(max_length)
        self.vectorize = keras.layers.TextVectorization(
            standardize=glove_standardize,
            split="whitespace",
            vocabulary=self.vocabulary,
            ragged=True,
            name="vectorize",
        )

    def build(self, input_shape: Any) -> None:
        # The lookup table is built from the vocabulary in __init__; nothing depends on the shape.
        self.built = True

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.reshape(tf.convert_to_tensor(texts), [-1])
        ragged = self.vectorize(texts)
        # Reversing the flat values reverses both the row order and each row; to_tensor then keeps
        # each row's last max_length tokens (reversed); reversing both axes restores the order with
        # padding in front.
        flipped = tf.RaggedTensor.from_row_lengths(tf.reverse(ragged.flat_values, [0]), tf.reverse(ragged.row_lengths(), [0]))
        dense = flipped.to_tensor(default_value=PAD_ID, shape=[None, self.max_length])
        return tf.cast(tf.reverse(dense, [0, 1]), "int32")

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], self.max_length)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocabulary": self.vocabulary, "max_length": self.max_length}
