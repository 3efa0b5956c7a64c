"""The queue of records a tracker has not sent yet: kept in order, written to a pending file after
every change (so a killed process loses nothing), and sent through a sink it is given.

It knows nothing of MLflow. A sink sends one record and says, by the exception it raises, whether
the record is wrong for good (:class:`Rejected`: dropped), whether the server refuses this process
(:class:`Refused`: fatal before training starts, else waited out), or anything else (an outage:
tried again after a back-off). Unlike an in-memory queue, what was not sent survives the process,
and the next process with the same pending file sends it first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from model_lib._io import check_output_folder, write_json
from model_lib.errors import DataError, OutputError
from model_lib.tracking.records import Record, parse

logger = logging.getLogger(__name__)

PENDING_FILE = "mlflow-pending.json"
# After a failure a record is tried again only after this back-off (doubling up to the cap), so
# training does not wait on a server that is down.
FIRST_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 600.0


def read_pending(path: Path) -> dict[str, Any]:
    """Return a pending file's JSON object: ``run_id`` a string or null, ``queue`` a list (its records
    unchecked: see :func:`check_pending`).

    Raises:
        DataError: naming ``path``, for a file that is not UTF-8 JSON of that shape.
        OSError: if it cannot be read.
    """
    raw = path.read_bytes()
    try:
        saved = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: expected a UTF-8 text file, got byte {raw[exc.start]:#04x} at offset {exc.start}") from None
    except ValueError as exc:
        raise DataError(f"{path}: expected JSON, got {exc}") from None
    if not isinstance(saved, dict) or "queue" not in saved:
        kind = "an object without one" if isinstance(saved, dict) else f"a {type(saved).__name__}"
        raise DataError(f"{path}: expected a JSON object with a 'queue' list, got {kind}")
    if not isinstance(saved["queue"], list):
        raise DataError(f"{path}: queue: expected a list of records, got a {_json_kind(saved['queue'])}")
    if not isinstance(saved.get("run_id"), (str, type(None))):
        raise DataError(f"{path}: run_id: expected a string or null, got {saved['run_id']!r}")
    return saved


def check_pending(path: Path) -> int:
    """Return how many records the pending file at ``path`` holds, once every one of them is one this
    version can send (``model-lib mlflow-sync`` checks before it sends anything, so that one bad
    record does not cost the others: the file is left as it is).

    Raises:
        DataError: naming ``path`` and the first bad record (``queue[i]``), and how many are bad.
        OSError: if it cannot be read.
    """
    saved = read_pending(path)
    problems = []
    for index, entry in enumerate(saved["queue"]):
        try:
            parse(entry)
        except DataError as exc:
            problems.append(f"queue[{index}]: {exc}")
    if problems:
        more = f" (and {len(problems) - 1} more bad records)" if len(problems) > 1 else ""
        raise DataError(f"{path}: {problems[0]}{more}; nothing was sent, the file is unchanged")
    return len(saved["queue"])


def _json_kind(value: Any) -> str:
    return {str: "string", dict: "object", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


class Rejected(Exception):
    """The server answered that the record is wrong (e.g. HTTP 400/404): it would never take it."""


class Refused(Exception):
    """The server refused this process (credentials); the message says so for a user."""


class _CallerFailed(Exception):
    """Carries an error of the queue's caller (``on_run_id``) through :meth:`PendingQueue.flush`,
    which treats every other failure as an outage to retry."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Sink(Protocol):
    """Sends one record of a run."""

    def send(self, record: Record, run_id: str | None, save: Callable[[], None]) -> str | None:
        """Send ``record`` to run ``run_id`` (None before a Start record); return the run id after
        it (a Start creates the run). Call ``save`` after changing ``record``, so that the change is
        in the pending file before anything else can fail.

        Raises:
            Rejected: if the record can never be taken.
            Refused: if the server refuses this process.
            Exception: anything else is an outage: the record is sent again later.
        """
        ...


class PendingQueue:
    """The records not sent yet, in order, mirrored in ``path`` (None: in memory only).

    A pending file holds ``{"run_id": ..., "queue": [...records], **header}``. Opened for run
    ``run_id`` (None: whichever run the file holds), a file of another run is left where it is and
    this queue writes beside it (``<stem>-<run id>.json``). ``on_run_id`` is called once a sent
    record gave the queue a run id (after the id is kept, so no retry creates a second run; what it
    raises is the caller's and reaches the caller). ``target`` names where records go, in log lines.

    The pending file is mode 0600 whatever the umask: its records carry whatever a user put in
    params and tags (MODEL_LIB_MLFLOW_TAGS), and only this user's processes (a restart,
    ``model-lib mlflow-sync``) read it. A pending file that cannot be written any more (a full disk)
    is removed, so that it cannot send again what was sent, and the records wait in memory.

    Raises:
        OutputError: if the pending file's folder cannot be written (checked before anything is sent).
    """

    def __init__(
        self,
        sink: Sink,
        path: str | Path | None = None,
        *,
        run_id: str | None = None,
        header: Mapping[str, str] | None = None,
        target: str = "the tracking server",
        on_run_id: Callable[[str], None] | None = None,
    ) -> None:
        self.sink = sink
        self.path = Path(path) if path is not None else None
        self.run_id = run_id
        self.header = dict(header or {})
        self.target = target
        self.on_run_id = on_run_id
        if self.path is not None:
            check_output_folder(self.path.parent, "the pending tracking records")
        self.records: list[Record] = self._load()
        self._unsaved = False
        self.failures = 0
        self._retry_at = 0.0

    def _load(self) -> list[Record]:
        if self.path is None or not self.path.is_file():
            return []
        try:
            saved = read_pending(self.path)
        except (OSError, DataError) as exc:
            # Kept beside, not overwritten by the next save: a user can still read or repair it.
            aside = self.path.with_name(self.path.name + ".unreadable")
            try:
                self.path.replace(aside)
            except OSError:
                logger.warning("%s; its tracking records are lost", exc)
            else:
                logger.warning("%s; moved to %s and not sent", exc, aside)
            return []
        if self.run_id is None:
            self.run_id = saved.get("run_id")
        if saved.get("run_id") not in (None, self.run_id):
            logger.warning("%s holds records of run %s, not of run %s: left there", self.path, saved["run_id"], self.run_id)
            self.path = self.path.with_name(f"{self.path.stem}-{self.run_id}.json")
            return []
        loaded = []
        for index, entry in enumerate(saved["queue"]):
            try:
                loaded.append(parse(entry))
            except DataError as exc:  # a record of a newer version: the others still go
                logger.warning("%s: queue[%d]: %s; skipped", self.path, index, exc)
        return loaded

    def save(self) -> None:
        """Write the records to the pending file; remove the file when none is left."""
        if self.path is None:
            return
        try:
            if self.records:
                queue = [record.to_dict() for record in self.records]
                write_json(self.path, {"run_id": self.run_id, **self.header, "queue": queue}, private=True)
            elif self.path.is_file():
                self.path.unlink()
        except (OSError, OutputError) as exc:  # tracking never stops training, its mirror neither
            with contextlib.suppress(OSError):
                self.path.unlink()  # a stale file would send again what is sent from memory now
            if not self._unsaved:
                logger.warning("%s; the tracking records not sent yet wait in memory only", exc)
            self._unsaved = True

    @property
    def pending(self) -> list[str]:
        """Return the kinds of the records waiting, in order (e.g. ["epoch", "model"])."""
        return [record.op for record in self.records]

    def append(self, record: Record) -> None:
        """Queue ``record`` behind the others and write the pending file (nothing is sent)."""
        self.records.append(record)
        self.save()

    def flush(self, wait: float = 0.0, *, refused_is_fatal: bool = False) -> bool:
        """Send the records in order; return whether none is left.

        After a failure, records are tried again only once a back-off has passed (30 s, doubling up
        to 10 min), so a caller does not wait on a server that is down; ``wait`` > 0 keeps trying
        for that many seconds instead.

        Raises:
            ConfigError: with ``refused_is_fatal``, if the sink raised :class:`Refused`.
            Exception: what ``on_run_id`` raised (never retried: it is not the sink's).
        """
        deadline = time.monotonic() + wait
        if not self.records:
            return True
        if time.monotonic() < self._retry_at and wait <= 0:
            return False
        while True:
            try:
                self._send_all()
            except _CallerFailed as failed:
                error = failed.error
                break
            except Exception as exc:  # the server or the client failed: never a reason to stop the caller
                self._failed(exc, refused_is_fatal)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
                continue
            if self.failures:
                logger.info("%s answers again: the records kept meanwhile are sent", self.target)
            self.failures = 0
            return True
        raise error  # outside the handler: the caller sees its own error, not ours around it

    def _send_all(self) -> None:
        while self.records:
            record = self.records[0]
            try:
                run_id = self.sink.send(record, self.run_id, self.save)
            except Rejected as exc:
                # A record the server will never take (a bad value): sending it again would hold
                # back every record behind it, the run's end included.
                logger.warning("%s refused the %s record for good (%s); it is dropped", self.target, record.op, str(exc)[:300])
                run_id = None
            self.records.pop(0)
            created = run_id is not None and run_id != self.run_id
            if created:
                self.run_id = run_id
            self.save()
            if created and self.on_run_id is not None:
                try:
                    self.on_run_id(str(run_id))
                except Exception as exc:  # the caller's own failure (its file could not be written)
                    raise _CallerFailed(exc) from None

    def _failed(self, exc: Exception, refused_is_fatal: bool) -> None:
        from model_lib.errors import ConfigError

        self.save()
        if refused_is_fatal and isinstance(exc, Refused):
            raise ConfigError(str(exc)) from None
        self.failures += 1
        self._retry_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self.failures - 1))
        if self.failures == 1:
            logger.warning(
                "%s did not take a record (%s: %s); training goes on, and %d records wait in %s",
                self.target,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
                len(self.records),
                self.path or "memory",
            )
