"""What a tracker queues: one typed record per kind of call, each written to the pending file as a
JSON object ``{"op": <kind>, ...fields}``.

The ``op`` names and field names are the pending file's format: a file written by an earlier
version is still read and sent, so a field is only ever added with a default, never renamed.
"""

from __future__ import annotations

import dataclasses
import logging
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
class End(Record):
    """End the run with ``status`` (FINISHED, FAILED or KILLED)."""

    op: ClassVar[str] = "end"
    status: str


KINDS: dict[str, type[Record]] = {
    kind.op: kind for kind in (Start, Status, Params, Tags, Restart, Metrics, Epoch, Artifacts, Model, Register, End)
}


def from_dict(saved: dict[str, Any]) -> Record | None:
    """Return the record a pending file's JSON object describes, or None (logged) for a kind or a
    field this version does not know (a record written by a newer version)."""
    kind = KINDS.get(str(saved.get("op")))
    fields = {k: v for k, v in saved.items() if k != "op"}
    if kind is None:
        logger.warning("unknown tracking record %r skipped", saved.get("op"))
        return None
    try:
        return kind(**fields)
    except TypeError:
        logger.warning("tracking record %r with unknown fields %s skipped", kind.op, sorted(fields))
        return None
