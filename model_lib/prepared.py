"""The prepared files: the four SageMaker channels that ``prepare`` writes and training reads.

This module is the one definition of the channel contract (channel names and the file each one
holds in ``data/prepared``), and the only reader and writer of those files. Importing it imports neither
Keras nor TensorFlow, so the launcher and the contract checks stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_lib._io import atomic_path
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
    data = PreparedData(x_train, y_train, x_test, y_test, Vocabulary.load(vocab), load_embedding_matrix(embeddings))
    data.check()
    return data
