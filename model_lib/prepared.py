"""The prepared files: the four SageMaker channels that ``prepare`` writes and training reads.

This module is the one definition of the channel contract (channel names and the path each one
holds in ``data/prepared``), and the only reader and writer of those files. Importing it imports neither
Keras nor TensorFlow, so the launcher and the contract checks stay fast.

An encoded split (``train/``, ``test/``) is a folder of part files, each an ``.npz`` of at most
``shard_reviews`` reviews as ragged id lists: ``ids`` (int32, the reviews' ids one after another),
``offsets`` (int64, review i is ``ids[offsets[i]:offsets[i + 1]]``), ``labels`` (int8), and what
places the part in its split: ``part``, ``parts``, ``first_row`` (the split row of its first review),
``split_rows``, ``max_length`` and the vocabulary digest. A review holds its last ``max_length``
tokens, unpadded: padding is added when batches are made (:meth:`Split.padded`), so a split costs
its tokens, not reviews x ``max_length``. Parts are found by content, not by name (a SageMaker
channel names them by their DVC object), and any NumPy reads them: ``np.load(part)["ids"]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_lib._io import atomic_folder, atomic_path
from model_lib.embeddings import FIRST_TOKEN_ID, OOV_ID, PAD_ID
from model_lib.errors import DataError

if TYPE_CHECKING:
    from model_lib.text import Vocabulary

# Channel name -> its path in the prepared folder. The splits are DVC directory outputs (a SageMaker
# channel of their objects, see model_lib.sagemaker.launch); vocab and embeddings one file each.
CHANNEL_FILES: dict[str, str] = {
    "train": "train",
    "test": "test",
    "vocab": "vocab.txt",
    "embeddings": "embeddings.npy",
}
CHANNELS = tuple(CHANNEL_FILES)
SPLIT_CHANNELS = ("train", "test")  # the channels that are folders of parts
SHARD_REVIEWS = 10000  # reviews per part: prepare.shard_reviews' default
_PART_MEMBERS = ("ids", "offsets", "labels", "part", "parts", "first_row", "split_rows", "max_length")


def channel_paths(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Return {channel: path of its file or folder} inside a prepared folder."""
    return {name: Path(folder) / filename for name, filename in CHANNEL_FILES.items()}


# The member of a part holding the sha256 of the vocabulary it was encoded with (the bytes of its
# vocab.txt). Parts written without a vocabulary (tests, benchmarks) have none: it cannot be checked.
VOCABULARY_DIGEST = "vocabulary_sha256"


def vocabulary_digest(tokens: Sequence[str]) -> str:
    """Return the sha256 (hex) of a vocabulary: that of its vocab.txt, as ``Vocabulary.save`` writes it."""
    return hashlib.sha256(("\n".join(tokens) + "\n").encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Split:
    """Encoded reviews as ragged id lists: review i is ``ids[offsets[i]:offsets[i + 1]]`` (its last
    ``max_length`` tokens, no padding) with label ``labels[i]``.

    ``vocabulary`` is the digest of the vocabulary that encoded it (None: unknown).
    """

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    max_length: int
    vocabulary: str | None = None
    # The crc32 of each part it was read from, in part order (None: made in memory): the data's
    # identity, the same whether one host read every part or each host some (model_lib.shards).
    part_digests: tuple[int, ...] | None = None
    # Only some parts of a split are here (a host's share of a sharded channel): which (None: all).
    held: HeldParts | None = None
    # The process that holds each row, when the hosts of a cluster each hold some (model_lib.shards).
    owners: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int]:
        """Return the shape the split has padded: (reviews, max_length)."""
        return (len(self), self.max_length)

    @classmethod
    def from_padded(cls, x: np.ndarray, y: np.ndarray, vocabulary: str | None = None) -> Split:
        """Return the split of 'pre'-padded id rows ``x`` (padding, id 0, only in front) and labels ``y``.

        Raises:
            DataError: if ``x`` is not 2-D or its rows differ from the labels in number.
        """
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or len(x) != len(y):
            raise DataError(f"expected x of shape (n, length) and n labels, got {x.shape} and {y.shape}")
        present = x != PAD_ID
        offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int64)
        return cls(x[present].astype(np.int32), offsets, y.astype(np.int8), int(x.shape[1]), vocabulary)

    def padded(self, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Return the reviews ``rows`` (all if None) as int32 ids of shape (len(rows), max_length),
        'pre'-padded with 0: exactly what ``Vocabulary.encode`` returns for their texts."""
        indices: np.ndarray = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(indices), self.max_length), dtype=np.int32)
        for first in range(0, len(indices), _ROWS_AT_A_TIME):  # bounds the index arrays below
            chosen = indices[first : first + _ROWS_AT_A_TIME]
            starts = self.offsets[chosen]
            lengths = self.offsets[chosen + 1] - starts
            total = int(lengths.sum())
            if total:
                row = np.repeat(np.arange(first, first + len(chosen)), lengths)
                within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                columns = np.repeat(self.max_length - lengths, lengths) + within
                out[row, columns] = self.ids[np.repeat(starts, lengths) + within]
        return out

    def rows(self, rows: np.ndarray | Sequence[int] | None = None) -> Iterator[np.ndarray]:
        """Yield the id list of each review of ``rows`` (all if None), unpadded (views, not copies)."""
        for i in np.arange(len(self)) if rows is None else rows:
            yield self.ids[self.offsets[i] : self.offsets[i + 1]]

    def take(self, rows: np.ndarray | Sequence[int]) -> Split:
        """Return the split of the reviews ``rows``, in that order (a copy: memory for their ids, no more)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.empty(int(offsets[-1]), dtype=self.ids.dtype)
        sources = self.offsets.tolist()  # plain ints: a loop over numpy scalars is several times slower
        for row, start, end in zip(rows.tolist(), offsets[:-1].tolist(), offsets[1:].tolist()):
            ids[start:end] = self.ids[sources[row] : sources[row + 1]]
        return Split(ids, offsets, self.labels[rows], self.max_length, self.vocabulary)


_ROWS_AT_A_TIME = 4096


@dataclasses.dataclass(frozen=True)
class HeldParts:
    """Which parts of a split a :class:`Split` of some of them holds, in the order it holds them."""

    index: tuple[int, ...]  # each held part's number in its split
    first_row: tuple[int, ...]  # the split row of its first review
    rows: tuple[int, ...]  # its reviews
    parts: int  # the parts of the whole split
    split_rows: int  # the reviews of the whole split


def part_digest(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> int:
    """Return the crc32 of one part's reviews: its ids, review lengths and labels."""
    digest = zlib.crc32(np.ascontiguousarray(ids, dtype=np.int32).data)
    digest = zlib.crc32(np.ascontiguousarray(np.diff(offsets), dtype=np.int64).data, digest)
    return zlib.crc32(np.ascontiguousarray(labels, dtype=np.int8).data, digest)


def _as_they_are(counts: np.ndarray) -> np.ndarray:
    return counts


@dataclasses.dataclass(frozen=True)
class SplitRows:
    """Some reviews of a split, by row, without a copy of their ids: what a model's fitter reads
    (:data:`model_lib.registry.Fitter`)."""

    split: Split
    indices: np.ndarray
    # Sums counts (whole numbers, one array per host) over the hosts of a cluster that each hold
    # some of the rows (model_lib.shards); the counts as they are otherwise.
    across_hosts: Callable[[np.ndarray], np.ndarray] = _as_they_are

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """Return the labels of the rows, in order."""
        return self.split.labels[self.indices]

    def rows(self) -> Iterator[np.ndarray]:
        """Yield the id list of each row, unpadded, in order."""
        return self.split.rows(self.indices)


@dataclasses.dataclass
class PreparedData:
    """Encoded splits, their vocabulary and the GloVe matrix for it (the SageMaker channels).

    ``sources`` names each channel's path in messages (the channel name for data made in memory).
    """

    train: Split
    test: Split
    vocabulary: Vocabulary
    embedding_matrix: np.ndarray
    sources: dict[str, str] = dataclasses.field(default_factory=lambda: {name: name for name in CHANNELS})

    @property
    def max_length(self) -> int:
        """Return the encoded sequence length."""
        return self.train.max_length

    # The padded arrays whole: reviews x max_length ids, for small data (tests, notebooks) only.
    @property
    def x_train(self) -> np.ndarray:
        return self.train.padded()

    @property
    def y_train(self) -> np.ndarray:
        return self.train.labels

    @property
    def x_test(self) -> np.ndarray:
        return self.test.padded()

    @property
    def y_test(self) -> np.ndarray:
        return self.test.labels

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
        if len(self.train) == 0:
            raise DataError("train: the training split is empty")
        for name, split in (("train", self.train), ("test", self.test)):
            if split.ids.size and (int(split.ids.max()) >= self.vocabulary.size or int(split.ids.min()) < 0):
                raise DataError(f"{name}: token id {int(split.ids.max())} is outside the vocabulary's {self.vocabulary.size} ids")
        if self.test.max_length != self.train.max_length:
            raise DataError(f"test: sequence length {self.test.max_length} differs from train's {self.train.max_length}")
        self._check_can_train()

    def _check_can_train(self) -> None:
        """Check what would train for minutes and then fail, or end with a model predicting NaN."""
        check_finite_matrix(self.embedding_matrix, self.sources["embeddings"])
        if len(self.test) == 0:
            raise DataError(f"{self.sources['test']}: the split is empty; expected encoded reviews")
        for name, split in (("train", self.train), ("test", self.test)):
            check_split_values(split.ids, split.labels, self.sources[name])
        if self.train.held is None:  # some parts: checked once every host's labels are known (model_lib.shards)
            check_both_labels(self.train.labels, f"{self.sources['train']}: y: the split")
        # A host of a sharded split may own none of its rows (model_lib.shards): its ids are the others'.
        ids = self.train.ids
        if (not ids.size and self.train.owners is None) or (ids.size and int(ids.max()) <= OOV_ID):
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


def save_split(
    path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    *,
    vocabulary: Vocabulary | None = None,
    shard_reviews: int = SHARD_REVIEWS,
) -> None:
    """Write the 'pre'-padded id rows ``x`` and labels ``y`` as the encoded split folder ``path``.

    With ``vocabulary`` (the one that encoded ``x``) the parts also hold its digest, so that a model
    or a vocabulary file that is not that one is refused (:func:`check_split_vocabulary`).
    """
    digest = vocabulary_digest(vocabulary.tokens) if vocabulary is not None else None
    write_split(path, Split.from_padded(x, y, digest), shard_reviews=shard_reviews)


def write_split(
    path: str | os.PathLike[str],
    split: Split,
    *,
    rows: np.ndarray | None = None,
    shard_reviews: int = SHARD_REVIEWS,
) -> None:
    """Write the reviews ``rows`` of ``split`` (all if None), in that order, as the encoded split
    folder ``path``: parts of at most ``shard_reviews`` reviews. The folder replaces any one there
    only once every part is written.

    Raises:
        OutputError: if the place refuses the write.
    """
    rows = np.arange(len(split)) if rows is None else np.asarray(rows, dtype=np.int64)
    parts = max(1, -(-len(rows) // shard_reviews))
    with atomic_folder(path) as folder:
        for part in range(parts):
            piece = split.take(rows[part * shard_reviews : (part + 1) * shard_reviews])
            arrays = {
                "ids": piece.ids.astype(np.int32),
                "offsets": piece.offsets.astype(np.int64),
                "labels": piece.labels.astype(np.int8),
                "part": np.asarray(part),
                "parts": np.asarray(parts),
                "first_row": np.asarray(part * shard_reviews),
                "split_rows": np.asarray(len(rows)),
                "max_length": np.asarray(split.max_length),
            }
            if split.vocabulary is not None:
                arrays[VOCABULARY_DIGEST] = np.asarray(split.vocabulary)
            np.savez(folder / f"part-{part:05d}.npz", **arrays)  # type: ignore[arg-type]  # stubs: **arrays


def part_files(path: str | os.PathLike[str]) -> list[Path]:
    """Return every file under the split folder ``path``, recursively (hidden ones skipped), sorted:
    its parts, whatever their names.

    Raises:
        DataError: if ``path`` is missing, a file (a split of model-lib before parts), or holds no file.
    """
    path = Path(path)
    if path.is_file():
        raise DataError(
            f"{path}: expected an encoded split folder of part files (prepare writes data/prepared/train/ and "
            "test/), got a file; run `model-lib prepare` (or `dvc repro prepare`) again"
        )
    if not path.is_dir():
        raise DataError(f"{path}: encoded split not found")
    files = sorted(f for f in path.rglob("*") if f.is_file() and not any(n.startswith(".") for n in f.relative_to(path).parts))
    if not files:
        raise DataError(f"{path}: no part files; expected the .npz parts of an encoded split")
    return files


@dataclasses.dataclass(frozen=True)
class _Part:
    file: Path
    index: int
    parts: int
    first_row: int
    split_rows: int
    max_length: int
    vocabulary: str | None
    offsets: np.ndarray
    labels: np.ndarray


def _read_part(file: Path) -> _Part:
    """Return a part's small members (everything but its ids)."""
    if not zipfile.is_zipfile(file):
        raise DataError(f"{file}: not a part of an encoded split: not an .npz file; expected only the split's parts here")
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [m for m in _PART_MEMBERS if m not in archive.files]
            if missing:
                raise DataError(f"{file}: not a part of an encoded split: no member {missing[0]!r}")
            vocabulary = str(archive[VOCABULARY_DIGEST]) if VOCABULARY_DIGEST in archive.files else None
            part = _Part(
                file, int(archive["part"]), int(archive["parts"]), int(archive["first_row"]), int(archive["split_rows"]),
                int(archive["max_length"]),
                vocabulary, archive["offsets"].astype(np.int64), archive["labels"],
            )  # fmt: skip
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise DataError(f"{file}: not a part of an encoded split (an .npz of ids, offsets and labels): {exc}") from None
    lengths = np.diff(part.offsets)
    if (
        len(part.offsets) != len(part.labels) + 1
        or part.offsets[0] != 0
        or (lengths < 0).any()
        or (lengths > part.max_length).any()
    ):
        raise DataError(
            f"{file}: offsets: expected {len(part.labels) + 1} rising offsets from 0, each review at most {part.max_length} ids"
        )
    return part


def _parts(path: str | os.PathLike[str], some_parts: bool = False) -> list[_Part]:
    """Return the parts of the split folder ``path`` in order, checked to make one whole split
    (with ``some_parts``: some parts of one split, each once).

    Raises:
        DataError: naming the folder and the part that is missing, repeated or does not belong.
    """
    parts = sorted((_read_part(file) for file in part_files(path)), key=lambda part: part.index)
    first = parts[0]
    for part in parts:
        for field in ("parts", "split_rows", "max_length", "vocabulary"):
            if getattr(part, field) != getattr(first, field):
                raise DataError(
                    f"{path}: {part.file.name} and {first.file.name} are parts of different splits ({field} "
                    f"{getattr(part, field)} and {getattr(first, field)}); expected the parts of one prepare run"
                )
    if some_parts:
        return _some_parts(path, parts)
    indices = [part.index for part in parts]
    for expected, (index, part) in enumerate(zip(indices, parts)):
        if index != expected:
            problem = "appears twice" if index < expected else "is missing"
            number = index if index < expected else expected
            raise DataError(f"{path}: part {number} of {first.parts} {problem} ({part.file}); expected each part once")
    if len(parts) != first.parts:
        raise DataError(f"{path}: part {len(parts)} of {first.parts} is missing; expected each part once")
    rows = 0
    for part in parts:
        if part.first_row != rows:
            raise DataError(f"{path}: {part.file.name} starts at review {part.first_row}, after {rows} reviews in earlier parts")
        rows += len(part.labels)
    if rows != first.split_rows:
        raise DataError(f"{path}: the parts hold {rows} reviews, their split {first.split_rows}")
    return parts


def _some_parts(path: str | os.PathLike[str], parts: list[_Part]) -> list[_Part]:
    """Return ``parts`` (in order, of one split), checked to hold each part once and to place it in the split.

    Raises:
        DataError: naming the folder and the part that is repeated or misplaced.
    """
    for before, part in itertools.pairwise(parts):
        if part.index == before.index:
            raise DataError(f"{path}: part {part.index} of {part.parts} appears twice ({part.file}); expected each part once")
    for part in parts:
        if not (0 <= part.index < part.parts and 0 <= part.first_row <= part.split_rows - len(part.labels)):
            raise DataError(
                f"{part.file}: part {part.index} of {part.parts} at review {part.first_row} of {part.split_rows}: "
                "not a place in its split"
            )
    return parts


def load_split(path: str | os.PathLike[str], *, some_parts: bool = False) -> Split:
    """Return the encoded split in the folder ``path``.

    With ``some_parts`` the folder may hold only some of the split's parts (a host's share of a
    sharded channel): the split then holds their reviews, in part order, and says which in ``held``
    (None when every part is there).

    Raises:
        DataError: if the folder is missing, or its parts are not those of one whole split (with
            ``some_parts``: of one split, each once).
    """
    parts = _parts(path, some_parts)
    sizes = [int(part.offsets[-1]) for part in parts]
    ids = np.empty(sum(sizes), dtype=np.int32)  # filled part by part: no second copy of the split
    start = 0
    for part, size in zip(parts, sizes):
        try:
            with np.load(part.file, allow_pickle=False) as archive:
                part_ids = archive["ids"]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{part.file}: not a part of an encoded split: {exc}") from None
        if len(part_ids) != size:
            raise DataError(f"{part.file}: ids: expected {size} ids (the last offset), got {len(part_ids)}")
        check_split_values(part_ids, part.labels, str(part.file))
        ids[start : start + size] = part_ids
        start += size
    bases = np.cumsum([0, *sizes[:-1]])
    offsets = np.concatenate([[0], *(part.offsets[1:] + base for part, base in zip(parts, bases))]).astype(np.int64)
    labels = np.concatenate([part.labels for part in parts]).astype(np.int8)
    bounds = np.cumsum([0, *(len(part.labels) for part in parts)])
    digests = tuple(
        part_digest(ids[offsets[a] : offsets[b]], offsets[a : b + 1], labels[a:b]) for a, b in itertools.pairwise(bounds)
    )
    first = parts[0]
    held = None
    if len(parts) < first.parts:
        held = HeldParts(
            tuple(p.index for p in parts), tuple(p.first_row for p in parts), tuple(len(p.labels) for p in parts),
            first.parts, first.split_rows,
        )  # fmt: skip
    return Split(ids, offsets, labels, first.max_length, first.vocabulary, digests, held)


def split_vocabulary(path: str | os.PathLike[str]) -> str | None:
    """Return the digest of the vocabulary a split was encoded with; None for a split written without it.

    Raises:
        DataError: if the folder is missing or is not an encoded split.
    """
    return _parts(path)[0].vocabulary


def split_shape(path: str | os.PathLike[str], *, some_parts: bool = False) -> tuple[int, int]:
    """Return (reviews, max_length) of a split from its parts' small members (no ids are read); the
    reviews of the whole split, also when the folder holds ``some_parts`` of it.

    Raises:
        DataError: if the folder is missing or is not an encoded split.
    """
    parts = _parts(path, some_parts)
    return parts[0].split_rows, parts[0].max_length


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
    *,
    some_parts: bool = False,
) -> PreparedData:
    """Return the prepared data from its four files, checked to fit together.

    With ``some_parts`` the train folder may hold only some parts of its split (see :func:`load_split`).

    Raises:
        DataError: if a file is missing or malformed, or the files do not fit together.
    """
    from model_lib.text import Vocabulary  # imports TensorFlow: only when the data are loaded

    train_split, test_split = load_split(train, some_parts=some_parts), load_split(test)
    vocabulary = Vocabulary.load(vocab)
    sources = {"train": str(train), "test": str(test), "vocab": str(vocab), "embeddings": str(embeddings)}
    data = PreparedData(train_split, test_split, vocabulary, load_embedding_matrix(embeddings), sources)
    data.check()
    digest = vocabulary_digest(vocabulary.tokens)
    for split, encoded_with in ((train, train_split.vocabulary), (test, test_split.vocabulary)):
        # A vocabulary of the same size passes every check above; its ids would mean other words.
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
    x: Split,
    vocab: str | os.PathLike[str],
    model_tokens: Sequence[str],
    model_max_length: int,
    model: str | os.PathLike[str],
) -> None:
    """Check the split ``x`` (read from the folder ``split``) was encoded as the model at ``model`` encodes
    raw text: with its vocabulary ``model_tokens`` and its length ``model_max_length``.

    The split's own vocabulary digest decides; a split written without one is taken to be encoded
    with ``vocab`` (prepare writes them together). Scores of a split encoded otherwise look
    plausible (most ids still mean some word) but are wrong.

    Raises:
        DataError: naming the split, the model and, where ``vocab`` is the split's vocabulary, its
            first entry that differs from the model's.
    """
    from model_lib.text import Vocabulary  # imports TensorFlow: the model is loaded already

    if x.max_length != model_max_length:
        raise DataError(
            f"{split}: reviews of {x.max_length} tokens, but the model {model} takes {model_max_length}; "
            f"expected a split prepared with max_length={model_max_length}"
        )
    encoded_with, model_digest = x.vocabulary, vocabulary_digest(model_tokens)
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
    if x.ids.size and int(x.ids.max()) >= len(model_tokens) + FIRST_TOKEN_ID:
        raise DataError(f"{split}: token id {int(x.ids.max())} is outside the model {model}'s {len(model_tokens) + 2} ids")
