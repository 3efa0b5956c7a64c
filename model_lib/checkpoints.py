"""Training state on disk, for runs that are stopped at any moment (spot reclaim, Ctrl-C, SIGKILL).

Each save is one *generation*: a folder ``gen-<n>`` holding ``arrays.npz`` (every model, optimizer
and metric variable but the frozen tables a rebuilt model holds anyway), ``best.npz`` (the best
weights so far, written by each generation itself: generations share no file, so one damaged file
never takes two with it) and ``state.json``
(position in the run, history, early-stopping state, the sizes and CRC-32 of the array files). It
is written under a temporary name and renamed into place, so a generation either exists whole or
not at all; ``state.json`` is written last inside it and names what it verifies. The newest
:data:`KEEP` generations are kept; on start the newest one that verifies is used, and one that does
not (truncated, corrupt) is skipped with a warning naming the file, never a crash.

A large array that is mostly zeros (the n-gram weights and their optimizer slots: n-grams below
``min_count`` never train) is stored as a bitmap of its non-zero entries and their values, lossless
to the bit (``-0.0`` included): a generation costs what a spot job uploads, so it holds only what
resume needs.

``run.json`` beside the generations names the MLflow run of this training, so a restarted job
reopens the same run even when it was killed before its first generation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_lib._io import temporary_folder, write_json

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: sparse entries (see encoded); format-1 generations held the frozen tables too
KEEP = 2
ARRAYS = "arrays.npz"
BEST = "best.npz"
STATE = "state.json"
RUN_REFERENCE = "run.json"
RETIRED = "retired.json"  # the newest generation of a finished training: never resumed
_GENERATION = re.compile(r"^gen-(\d{6,})$")
_GROUPS = ("model", "optimizer", "metrics")
# An array of at least this many entries is stored sparse when at most SPARSE_SHARE of them are non-zero.
SPARSE_MIN_SIZE = 1 << 16
SPARSE_SHARE = 0.5


@dataclasses.dataclass
class Generation:
    """One saved training state: where it is, its position and bookkeeping, and its arrays by group."""

    path: Path
    state: dict[str, Any]
    arrays: dict[str, list[np.ndarray]]

    @property
    def number(self) -> int:
        return int(self.state["generation"])


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generation_numbers(directory: Path) -> list[int]:
    """Return the numbers of the generation folders in ``directory`` (complete by name), newest first."""
    if not directory.is_dir():
        return []
    found = (_GENERATION.match(entry.name) for entry in directory.iterdir() if entry.is_dir())
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _folder(directory: Path, number: int) -> Path:
    return directory / f"gen-{number:06d}"


def encoded(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the entries to write for ``arrays``: each large, mostly-zero array as three entries
    ``<name>:mask`` (np.packbits of which entries have any bit set), ``<name>:values`` (those
    entries, in order) and ``<name>:shape``; every other array as it is (see :func:`decoded`)."""
    entries: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.size < SPARSE_MIN_SIZE or array.dtype.itemsize not in (1, 2, 4, 8):
            entries[name] = array
            continue
        flat = array.reshape(-1)
        # By bit pattern, not value: -0.0 is kept (it compares equal to 0.0), so decoding is exact.
        present = flat.view(f"u{flat.dtype.itemsize}") != 0
        if np.count_nonzero(present) > SPARSE_SHARE * flat.size:
            entries[name] = array
            continue
        entries[name + ":mask"] = np.packbits(present)
        entries[name + ":values"] = flat[present]
        entries[name + ":shape"] = np.asarray(array.shape, dtype=np.int64)
    return entries


def decoded(archive: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Return the array ``name`` of an archive written from :func:`encoded` entries, as it was saved.

    Raises:
        KeyError: if the archive holds no array ``name``.
        ValueError: if its sparse entries do not fit together.
    """
    if name + ":mask" not in archive:
        return archive[name]
    values, shape = archive[name + ":values"], tuple(int(n) for n in archive[name + ":shape"])
    size = int(np.prod(shape, dtype=np.int64))
    present = np.unpackbits(archive[name + ":mask"], count=size).astype(bool)
    if int(present.sum()) != len(values):
        raise ValueError(f"{name}: {int(present.sum())} entries marked, {len(values)} values")
    flat = np.zeros(size, dtype=values.dtype)
    flat[present] = values
    return flat.reshape(shape)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    with path.open("wb") as handle:
        np.savez(handle, **encoded(arrays))  # type: ignore[arg-type]
        handle.flush()
        os.fsync(handle.fileno())
    return {"size": path.stat().st_size, "crc32": _crc32(path)}


def save(
    directory: Path,
    state: Mapping[str, Any],
    arrays: Mapping[str, Sequence[np.ndarray]],
    best: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write one generation atomically and prune older ones; return its folder.

    ``state`` must be JSON-serialisable; ``arrays`` maps each group (model, optimizer, metrics) to
    its list of arrays. ``best`` is the best weights so far (None before there are any). The
    generation number is one above the newest folder present.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # A write that was killed leaves its temporary folder; only the writer removes them (readers
    # such as `latest` must not: the writer may be another process, in the middle of a save).
    for leftover in directory.glob(".gen-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    numbers = generation_numbers(directory)
    number = (numbers[0] + 1) if numbers else 1
    tmp = temporary_folder(directory, prefix=f".gen-{number:06d}.", suffix=".tmp")  # the umask's mode, not 0700
    try:
        flat = {f"{group}/{i:05d}": np.asarray(a) for group in _GROUPS for i, a in enumerate(arrays.get(group, ()))}
        files = {ARRAYS: _write_npz(tmp / ARRAYS, flat)}
        counts = {group: len(arrays.get(group, ())) for group in _GROUPS}
        if best is not None:
            files[BEST] = _write_npz(tmp / BEST, {f"best/{i:05d}": np.asarray(a) for i, a in enumerate(best)})
            counts["best"] = len(best)
        full = {**state, "format": FORMAT, "generation": number, "files": files, "array_counts": counts}
        (tmp / STATE).write_text(json.dumps(full, indent=1, sort_keys=True), encoding="utf-8")
        _fsync(tmp / STATE)
        final = _folder(directory, number)
        os.rename(tmp, final)
        _fsync(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in generation_numbers(directory)[KEEP:]:
        shutil.rmtree(_folder(directory, old), ignore_errors=True)
    return final


def _verify(folder: Path) -> dict[str, Any]:
    """Return the generation's state after checking its files; raise ValueError naming the problem."""
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{STATE} unreadable ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{STATE}: not a format-{FORMAT} state")
    for name, expected in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{name} is missing")
        if path.stat().st_size != expected["size"]:
            raise ValueError(f"{name} has {path.stat().st_size} bytes, expected {expected['size']} (truncated?)")
        if _crc32(path) != expected["crc32"]:
            raise ValueError(f"{name} fails its CRC-32 check (corrupt)")
    return state


def _read_arrays(folder: Path, counts: Mapping[str, int]) -> dict[str, list[np.ndarray]]:
    with np.load(folder / ARRAYS, allow_pickle=False) as archive:
        arrays = {group: [decoded(archive, f"{group}/{i:05d}") for i in range(counts.get(group, 0))] for group in _GROUPS}
    if counts.get("best"):
        with np.load(folder / BEST, allow_pickle=False) as archive:
            arrays["best"] = [decoded(archive, f"best/{i:05d}") for i in range(counts["best"])]
    return arrays


def latest(directory: Path | None) -> Generation | None:
    """Return the newest generation in ``directory`` that verifies, or None.

    Generations that fail verification are skipped with a warning. Reading changes nothing on disk.
    """
    if directory is None or not directory.is_dir():
        return None
    retired = _retired_through(directory)
    for number in generation_numbers(directory):
        if number <= retired:
            break
        folder = _folder(directory, number)
        try:
            state = _verify(folder)
            arrays = _read_arrays(folder, state["array_counts"])
        except (ValueError, OSError, KeyError) as exc:
            logger.warning("checkpoint %s skipped: %s; trying the one before", folder, exc)
            continue
        return Generation(folder, state, arrays)
    return None


def write_run_reference(directory: Path, run_id: str, fingerprint: Mapping[str, Any]) -> None:
    """Record which MLflow run this training logs to (read back by :func:`read_run_reference`)."""
    write_json(directory / RUN_REFERENCE, {"run_id": run_id, "fingerprint": dict(fingerprint)})


def read_run_reference(directory: Path | None, fingerprint: Mapping[str, Any]) -> str | None:
    """Return the MLflow run id recorded for a training with this ``fingerprint``, or None."""
    if directory is None:
        return None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        recorded = json.loads((directory / RUN_REFERENCE).read_text(encoding="utf-8"))
        if recorded["fingerprint"] == dict(fingerprint):
            return str(recorded["run_id"])
    return None


def _retired_through(directory: Path) -> int:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((directory / RETIRED).read_text(encoding="utf-8"))["generation"])
    return 0


def clear(directory: Path | None, keep_last: bool = False) -> None:
    """Retire a finished training's state, so that a later training in the same folder starts
    afresh instead of "resuming" a finished one.

    Removes the run reference and the generations; with ``keep_last`` the newest generation stays,
    marked retired (``retired.json``): a SageMaker job's checkpoint URI then keeps its final state.
    """
    if directory is None or not directory.is_dir():
        return
    numbers = generation_numbers(directory)
    kept = numbers[:1] if keep_last else []
    for entry in directory.iterdir():
        found = _GENERATION.match(entry.name)
        if (found and int(found.group(1)) not in kept) or (entry.name.startswith(".gen-") and entry.name.endswith(".tmp")):
            shutil.rmtree(entry, ignore_errors=True)
    if kept:
        write_json(directory / RETIRED, {"generation": kept[0]})
    with contextlib.suppress(FileNotFoundError):
        (directory / RUN_REFERENCE).unlink()


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Return the keys whose values differ between two fingerprints, sorted."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
