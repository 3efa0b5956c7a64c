"""The prepared files: the four SageMaker channels that ``prepare`` writes and training reads.

This module is the one definition of the channel contract (channel names and the file each one
holds in ``data/prepared``), and the only reader and writer of those files. Importing it imports neither
Keras nor TensorFlow, so the launcher and the contract checks stay fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_lib._io import atomic_path
from model_lib.embeddings import FIRST_TOKEN_ID, OOV_ID
from model_lib.errors import DataError

if TYPE_CHECKING:
    from model_lib.text import Vocabulary

# Channel name -> file name in the prepared folder. SageMaker gets one channel per file (a channel
# cannot point at a DVC directory); inside a job each channel folder holds that one file under
# whatever name the store gave it.
CHANNEL_FILES: dict[str, str] = {
    "train": "train.npz",
    "test": "test.npz",
    "vocab": "vocab.txt",
    "embeddings": "embeddings.npy",
}
CHANNELS = tuple(CHANNEL_FILES)


def channel_paths(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Return {channel: path of its file} inside a prepared folder."""
    return {name: Path(folder) / filename for name, filename in CHANNEL_FILES.items()}


# The member of a split file holding the sha256 of the vocabulary it was encoded with (the bytes of
# its vocab.txt). Splits written before it existed have none: their vocabulary cannot be checked.
VOCABULARY_DIGEST = "vocabulary_sha256"


def vocabulary_digest(tokens: Sequence[str]) -> str:
    """Return the sha256 (hex) of a vocabulary: that of its vocab.txt, as ``Vocabulary.save`` writes it."""
    return hashlib.sha256(("\n".join(tokens) + "\n").encode("utf-8")).hexdigest()


@dataclasses.dataclass
class PreparedData:
    """Encoded splits, their vocabulary and the GloVe matrix for it (the SageMaker channels).

    ``sources`` names each channel's file in messages (the channel name for data made in memory).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vocabulary: Vocabulary
    embedding_matrix: np.ndarray
    sources: dict[str, str] = dataclasses.field(default_factory=lambda: {name: name for name in CHANNELS})

    @property
    def max_length(self) -> int:
        """Return the encoded sequence length."""
        return int(self.x_train.shape[1])

    def check(self) -> None:
        """Check the parts fit together and can train.

        Raises:
            DataError: if the matrix rows differ from the vocabulary's ids or hold NaN or inf, an id
                is out of range, the splits differ in length, a split is empty, a label is not 0 or
                1, the training split holds one class only or no id but padding and OOV.
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
        self._check_can_train()

    def _check_can_train(self) -> None:
        """Check what would train for minutes and then fail, or end with a model predicting NaN."""
        check_finite_matrix(self.embedding_matrix, self.sources["embeddings"])
        if len(self.x_test) == 0:
            raise DataError(f"{self.sources['test']}: the split is empty; expected encoded reviews")
        for name, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            check_split_values(x, y, self.sources[name])
        check_both_labels(self.y_train, f"{self.sources['train']}: y: the split")
        if int(self.x_train.max()) <= OOV_ID:
            raise DataError(
                f"{self.sources['train']}: x: every id is padding or OOV (0 or 1); expected ids of vocabulary tokens "
                f"(2 to {self.vocabulary.size - 1})"
            )


def check_split_values(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Check a split holds integer ids and labels that are 0 or 1 (an int8 cast of 0.7 or 2 would pass).

    Raises:
        DataError: naming ``where``, the array, the first wrong value and its row.
    """
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: x: expected integer token ids, got {x.dtype}")
    wrong = ~np.isin(y, (0, 1))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise DataError(f"{where}: y: expected labels 0 or 1, got {y[row].item()!r} (row {row})")


def check_both_labels(labels: np.ndarray, where: str) -> None:
    """Check ``labels`` hold both 0 and 1: a model of one class learns nothing (and its ROC AUC is undefined).

    Raises:
        DataError: naming ``where``, the one label and the number of reviews.
    """
    present = np.unique(labels)
    if len(present) == 1:
        raise DataError(f"{where} holds only label {int(present[0])} ({len(labels)} reviews); expected both labels 0 and 1")


def check_finite_matrix(matrix: np.ndarray, where: str) -> None:
    """Check every row of an embedding matrix is finite (a NaN row trains to a model predicting NaN).

    Raises:
        DataError: naming ``where`` and the first bad row (its token id).
    """
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise DataError(f"{where}: row {int(np.flatnonzero(~finite)[0])}: expected finite numbers, got NaN or inf")


def save_split(path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray, *, vocabulary: Vocabulary | None = None) -> None:
    """Write one encoded split as a single ``.npz`` file (x: int32 ids, y: int8 labels), atomically.

    With ``vocabulary`` (the one that encoded ``x``) the file also holds its digest, so that a model
    or a vocabulary file that is not that one is refused (:func:`check_split_vocabulary`).
    """
    arrays: dict[str, np.ndarray] = {"x": x.astype(np.int32), "y": y.astype(np.int8)}
    if vocabulary is not None:
        arrays[VOCABULARY_DIGEST] = np.asarray(vocabulary_digest(vocabulary.tokens))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # the stubs confuse **arrays with allow_pickle


def _existing_split(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: encoded split not found")
    return path


def _not_a_split(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: not an encoded split (.npz with x and y): {exc}")


def load_split(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) of an encoded split file.

    Raises:
        DataError: if the file is missing or is not such a file.
    """
    path = _existing_split(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["x"], archive["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise _not_a_split(path, exc) from None


def split_vocabulary(path: str | os.PathLike[str]) -> str | None:
    """Return the digest of the vocabulary a split was encoded with; None for a split written without it.

    Raises:
        DataError: if the file is missing or is not an encoded split.
    """
    path = _existing_split(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return str(archive[VOCABULARY_DIGEST]) if VOCABULARY_DIGEST in archive.files else None
    except (OSError, ValueError) as exc:
        raise _not_a_split(path, exc) from None


def split_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Return the shape of a split's ``x`` from its header alone (no data is read).

    Raises:
        DataError: if the file is missing or is not an encoded split.
    """
    path = _existing_split(path)
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(member)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise _not_a_split(path, exc) from None
    return tuple(int(n) for n in shape)


def load_embedding_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the embedding matrix saved as ``.npy``.

    Raises:
        DataError: if the file is missing, not a 2-D float array, or holds NaN or inf.
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
    check_finite_matrix(matrix, str(path))
    return matrix.astype(np.float32, copy=False)


def save_embedding_matrix(path: str | os.PathLike[str], matrix: np.ndarray) -> None:
    """Write the embedding matrix as ``.npy``, atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, matrix)


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
    from model_lib.text import Vocabulary  # imports TensorFlow: only when the data are loaded

    x_train, y_train = load_split(train)
    x_test, y_test = load_split(test)
    vocabulary = Vocabulary.load(vocab)
    sources = {"train": str(train), "test": str(test), "vocab": str(vocab), "embeddings": str(embeddings)}
    data = PreparedData(x_train, y_train, x_test, y_test, vocabulary, load_embedding_matrix(embeddings), sources)
    data.check()
    digest = vocabulary_digest(vocabulary.tokens)
    for split in (train, test):
        # A vocabulary of the same size passes every check above; its ids would mean other words.
        encoded_with = split_vocabulary(split)
        if encoded_with is not None and encoded_with != digest:
            raise DataError(
                f"{split}: encoded with another vocabulary than {vocab} (sha256 {encoded_with[:12]}, the file's "
                f"{digest[:12]}); expected the files of one prepare run"
            )
    return data


def _first_difference(file_tokens: Sequence[str], model_tokens: Sequence[str]) -> str:
    """Return where two vocabularies first differ, as "line N is 'a' there, 'b' in the model"."""
    line = next((i for i, (a, b) in enumerate(zip(file_tokens, model_tokens)) if a != b), None)
    line = min(len(file_tokens), len(model_tokens)) if line is None else line

    def token(tokens: Sequence[str]) -> str:
        return repr(tokens[line]) if line < len(tokens) else "missing"

    return f"line {line + 1} is {token(file_tokens)} there, {token(model_tokens)} in the model"


def check_split_vocabulary(
    split: str | os.PathLike[str],
    x: np.ndarray,
    vocab: str | os.PathLike[str],
    model_tokens: Sequence[str],
    model_max_length: int,
    model: str | os.PathLike[str],
) -> None:
    """Check the split ``x`` (read from ``split``) was encoded as the model at ``model`` encodes
    raw text: with its vocabulary ``model_tokens`` and its length ``model_max_length``.

    The split's own vocabulary digest decides; a split written without one is taken to be encoded
    with ``vocab`` (prepare writes them together). Scores of a split encoded otherwise look
    plausible (most ids still mean some word) but are wrong.

    Raises:
        DataError: naming the split, the model and, where ``vocab`` is the split's vocabulary, its
            first entry that differs from the model's.
    """
    from model_lib.text import Vocabulary  # imports TensorFlow: the model is loaded already

    if x.shape[1] != model_max_length:
        raise DataError(
            f"{split}: reviews of {x.shape[1]} tokens, but the model {model} takes {model_max_length}; "
            f"expected a split prepared with max_length={model_max_length}"
        )
    encoded_with, model_digest = split_vocabulary(split), vocabulary_digest(model_tokens)
    if encoded_with == model_digest:
        return
    file_tokens = Vocabulary.load(vocab).tokens if Path(vocab).is_file() else None
    if file_tokens is not None and encoded_with in (None, vocabulary_digest(file_tokens)):
        if list(file_tokens) != list(model_tokens):
            raise DataError(
                f"{split}: encoded with the vocabulary {vocab}, not the one of the model {model}: "
                f"{_first_difference(file_tokens, model_tokens)}; expected the split the model was trained with"
            )
    elif encoded_with is not None:
        other = "is missing" if file_tokens is None else "is not it either"
        raise DataError(
            f"{split}: encoded with another vocabulary (sha256 {encoded_with[:12]}) than the model {model}'s "
            f"({model_digest[:12]}), and {vocab} {other}; expected the split the model was trained with"
        )
    if x.size and int(x.max()) >= len(model_tokens) + FIRST_TOKEN_ID:
        raise DataError(f"{split}: token id {int(x.max())} is outside the model {model}'s {len(model_tokens) + 2} ids")
