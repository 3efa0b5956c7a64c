"""Writing our outputs: atomic writes (a stage that fails leaves no partial output behind), with the
mode a plain ``open()`` gets under the umask, one named-path :class:`OutputError` when the place
refuses a write, and the checks that an output can be written at all, made before anything trains.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_lib.errors import OutputError

# A write that fails with one of these is the place's fault (full, read-only, not ours, not a
# folder), not a bug: the user gets one line naming the path.
PLACE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
    }
)
FILE_MODE = 0o666  # what open() asks for: the umask makes it 0644 under 022, 0664 under 002
PRIVATE_MODE = 0o600
FOLDER_MODE = 0o777


def os_error_cause(exc: OSError) -> str | None:
    """Return ``"ENOSPC (No space left on device)"`` for an error of the place (:data:`PLACE_ERRNOS`),
    None for any other."""
    if exc.errno not in PLACE_ERRNOS:
        return None
    return f"{errno.errorcode[exc.errno]} ({exc.strerror or os.strerror(exc.errno)})"


def _unused_name(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    for _ in range(100):
        yield folder / f"{stem}.{secrets.token_hex(4)}{suffix}"
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(folder / stem))


def _create_file(folder: Path, stem: str, suffix: str, mode: int) -> Path:
    """Create a new empty file in ``folder`` with ``mode`` less the umask (tempfile.mkstemp's is always
    0600, which a serving process under another uid cannot read); return its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for path in _unused_name(folder, stem, suffix):
        try:
            os.close(os.open(path, flags, mode))
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover - _unused_name raises first


def temporary_folder(parent: str | os.PathLike[str], prefix: str, suffix: str = "") -> Path:
    """Create and return a new empty folder in ``parent`` with the mode ``mkdir`` gets under the
    umask (tempfile.mkdtemp's is always 0700)."""
    for path in _unused_name(Path(parent), prefix.rstrip("."), suffix):
        try:
            os.mkdir(path, FOLDER_MODE)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover - _unused_name raises first


def check_output_folder(folder: str | os.PathLike[str], what: str) -> None:
    """Check that files can be created in ``folder`` (made later where missing: its nearest existing
    folder is checked), by creating and removing one; nothing is left.

    Raises:
        OutputError: ``<folder>: expected a folder to write <what> in, got a file`` (or the cause:
            EROFS, EACCES, ...), naming the path that refused.
    """
    existing = Path(folder)
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing}: expected a folder to write {what} in, got a file")
    try:
        os.unlink(_create_file(existing, ".probe-write", "", PRIVATE_MODE))
    except OSError as exc:
        raise OutputError(f"{existing}: expected a folder to write {what} in, got {os_error_cause(exc) or exc}") from None


def check_output_file(path: str | os.PathLike[str], what: str) -> None:
    """Check that ``path`` can be written: not a folder, in a folder files can be created in.

    Raises:
        OutputError: naming the path and what is wrong (see :func:`check_output_folder`).
    """
    if Path(path).is_dir():
        raise OutputError(f"{path}: expected a file, got a folder")
    check_output_folder(Path(path).parent, what)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None, *, private: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the mode ``open()`` gives under the umask, or 0600 with ``private``. ``suffix``
    defaults to the target's own suffix, since some writers (Keras, NumPy) choose the format by
    extension. On any failure the temporary file is removed.

    Raises:
        OutputError: if ``path`` is a folder, its folder cannot be made, or the place refuses the
            write (full, read-only, not permitted): ``<path>: expected a writable file, got ENOSPC (...)``.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: expected a file, got a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_file(target.parent, f".tmp-{target.name}", _suffix(target, suffix), PRIVATE_MODE if private else FILE_MODE)
    except (FileExistsError, NotADirectoryError):
        check_output_folder(target.parent, target.name)  # raises, naming the file in the way
        raise
    except OSError as exc:
        _raise_place_error(target, exc)
        raise
    try:
        yield str(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            _raise_place_error(target, exc)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; if the block succeeds it takes the place of ``path``
    (the folder there before is removed), else it is removed and ``path`` is left as it was.

    The swap is two renames: a reader never sees a half-written folder, only, for an instant, none.

    Raises:
        OutputError: if ``path`` is a file, or the place refuses the write (full, read-only, not permitted).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: expected a folder, got a file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(target.parent, f".tmp-{target.name}")
    except OSError as exc:
        _raise_place_error(target, exc)
        raise
    try:
        yield tmp
        if target.exists():
            old = temporary_folder(target.parent, f".old-{target.name}")
            os.replace(target, old)  # onto an empty folder: a rename
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            _raise_place_error(target, exc)
        raise


def _suffix(target: Path, suffix: str | None) -> str:
    return suffix if suffix is not None else "".join(target.suffixes[-1:])


def _raise_place_error(target: Path, exc: OSError) -> None:
    """Raise the OutputError naming ``target`` for an error of the place; return for any other."""
    cause = os_error_cause(exc)
    if cause is not None:
        raise OutputError(f"{target}: expected a writable file, got {cause}") from exc


def write_json(path: str | os.PathLike[str], data: Any, *, private: bool = False) -> None:
    """Write ``data`` as indented JSON, atomically (mode 0600 with ``private``)."""
    with atomic_path(path, private=private) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
