"""What a tracker queues: one typed record per kind of call, each written to the pending file as a
JSON object ``{"op": <kind>, ...fields}``.

The ``op`` names and field names are the pending file's format: a file written by an earlier
version is still read and sent, so a field is only ever added with a default, never renamed.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from typing import Any, ClassVar

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Record:
    """A base for the records; ``op`` names the kind in the pending file."""

    op: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object the pending file holds for this record."""
        return {"op": self.op, **dataclasses.asdict(self)}


@dataclasses.dataclass
class Start(Record):
    """Create the run in ``experiment`` (the experiment too, if it does not exist)."""

    op: ClassVar[str] = "start"
    experiment: str


@dataclasses.dataclass
class Status(Record):
    """Set the run's status (RUNNING when a run is reopened)."""

    op: ClassVar[str] = "status"
    status: str


@dataclasses.dataclass
class Params(Record):
    """Log params (values are sent as strings)."""

    op: ClassVar[str] = "params"
    params: dict[str, Any]


@dataclasses.dataclass
class Tags(Record):
    """Set run tags."""

    op: ClassVar[str] = "tags"
    tags: dict[str, str]


@dataclasses.dataclass
class Restart(Record):
    """Add one to the run's restart count."""

    op: ClassVar[str] = "restart"


@dataclasses.dataclass
class Metrics(Record):
    """Log metrics at ``step`` (sent every time it is sent: MLflow keeps each as a new value)."""

    op: ClassVar[str] = "metrics"
    metrics: dict[str, float]
    step: int = 0


@dataclasses.dataclass
class Epoch(Record):
    """Log one epoch's metrics at ``step`` = epoch (0-based); the sink sends an epoch once per run."""

    op: ClassVar[str] = "epoch"
    step: int
    metrics: dict[str, float]


@dataclasses.dataclass
class Artifacts(Record):
    """Upload the files among ``paths`` that exist when it is sent, under ``artifact_path``."""

    op: ClassVar[str] = "artifacts"
    paths: list[str]
    artifact_path: str | None = None


@dataclasses.dataclass
class Model(Record):
    """Log the raw-string model saved at ``path``; the run's metrics at ``step`` become the model's.

    ``model_id`` is filled in (and the pending file rewritten) once the logged model exists, so a
    record sent again does not create a second one.
    """

    op: ClassVar[str] = "model"
    path: str
    examples: list[str]
    step: int = 0
    model_id: str | None = None


@dataclasses.dataclass
class Register(Record):
    """Register the logged model ``model_id`` (None: the run's logged model) as a version of ``name``."""

    op: ClassVar[str] = "register"
    name: str
    model_id: str | None = None


@dataclasses.dataclass
class Dataset(Record):
    """Log one input of the run as an MLflow dataset (see :mod:`model_lib.tracking.datasets`); MLflow
    keeps one per name and digest in a run, so a record sent again adds nothing."""

    op: ClassVar[str] = "dataset"
    name: str
    digest: str
    source: str
    context: str
    rows: int | None = None


@dataclasses.dataclass
class SystemMetrics(Record):
    """Log one sample of a host's system metrics (names ``system/...``) at ``step``, taken at
    ``timestamp`` (ms since the epoch): the run page plots them against the time they were taken."""

    op: ClassVar[str] = "system"
    metrics: dict[str, float]
    step: int
    timestamp: int


@dataclasses.dataclass
class End(Record):
    """End the run with ``status`` (FINISHED, FAILED or KILLED)."""

    op: ClassVar[str] = "end"
    status: str


KINDS: dict[str, type[Record]] = {
    kind.op: kind
    for kind in (Start, Status, Params, Tags, Restart, Metrics, Epoch, Artifacts, Model, Register, SystemMetrics, End, Dataset)
}


def parse(saved: Any) -> Record:
    """Return the record a pending file's JSON object describes, each field checked against its type.

    Raises:
        DataError: for something not an object with an ``op``, a kind or a field this version does
            not know, a missing field, or a value of the wrong type; the message names the record
            kind and the field (the caller adds the file and the record's place in it).
    """
    from model_lib.errors import DataError

    if not isinstance(saved, dict) or "op" not in saved:
        raise DataError(f"expected a JSON object with an 'op', got {str(saved)[:80]}")
    kind = KINDS.get(str(saved["op"]))
    if kind is None:
        raise DataError(f"unknown record {saved['op']!r}; expected one of {', '.join(KINDS)}")
    hints = typing.get_type_hints(kind)
    fields = {field.name: field for field in dataclasses.fields(kind)}
    given = {k: v for k, v in saved.items() if k != "op"}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise DataError(f"{kind.op!r} record: unknown field {unknown[0]!r}; expected {', '.join(fields) or 'none'}")
    missing = [name for name, field in fields.items() if name not in given and field.default is dataclasses.MISSING]
    if missing:
        raise DataError(f"{kind.op!r} record: missing field {missing[0]!r}")
    for name, value in given.items():
        if not _fits(value, hints[name]):
            raise DataError(f"{kind.op!r} record: {name}: expected {_describe(hints[name])}, got {str(value)[:80]!r}")
    return kind(**given)


def from_dict(saved: Any) -> Record | None:
    """Return the record a pending file's JSON object describes, or None (logged) for one
    :func:`parse` refuses (e.g. a kind or a field written by a newer version)."""
    from model_lib.errors import DataError

    try:
        return parse(saved)
    except DataError as exc:
        logger.warning("tracking record skipped: %s", exc)
        return None


_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _fits(value: Any, hint: Any) -> bool:
    """Return whether the JSON value ``value`` is of the annotated type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is Any:
        return True
    if hint in (int, float) and isinstance(value, bool):  # JSON true is not a number
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def _describe(hint: Any) -> str:
    """Return the annotated type ``hint`` in words ("a string or null", "an object of numbers")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arg) for arg in args)
    if origin is list:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a JSON object" if args[1] is Any else f"an object of {_describe(args[1]).split(' ', 1)[1]}s"
    return _WORDS.get(hint, getattr(hint, "__name__", str(hint)))
