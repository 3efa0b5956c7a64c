"""Shared by the benchmark scripts: machine facts and the results file."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Return what the figures depend on: CPU count, platform, Python, date."""
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2, sort_keys=True) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Return rows as an aligned plain-text table."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def seconds_table(seconds: dict[str, float], targets: dict[str, float], digits: int = 3) -> str:
    """Return timings as a table with each target and whether it was met."""
    rows = [
        {
            "step": name,
            "seconds": f"{value:.{digits}f}",
            "target": targets.get(name, ""),
            "ok": ("yes" if value <= targets[name] else "NO") if name in targets else "",
        }
        for name, value in seconds.items()
    ]
    return table(rows, ["step", "seconds", "target", "ok"])
