"""The one line training logs per epoch, and the regular expressions that read a metric back from it.

SageMaker's tuner learns a trial's objective by matching a regex against the job's log; users write
those regexes by hand and get them wrong. Here the line and its regexes are written in one place:
training logs :func:`epoch_line` after each epoch and :func:`best_line` once it has ended (the metrics
of the epoch whose weights the model keeps), and :func:`metric_definitions` gives the tuner the
regexes that read them (tests run them on the lines a real training logs). The best line comes last,
so a tuner that takes a metric's last value scores the model that is shipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Each metric an epoch line carries, in order: the epoch's training means, then the validation slice's.
METRICS = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")
# The metrics a tuning job can optimise, and the direction that is better.
OBJECTIVES = {"val_loss": "Minimize", "val_accuracy": "Maximize", "val_auc": "Maximize"}
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"


def _values(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{name}={metrics[name]:.6f}" for name in METRICS if name in metrics)


def epoch_line(epoch: int, epochs: int, metrics: Mapping[str, float], seconds: float) -> str:
    """Return the line for 0-based ``epoch`` of ``epochs``: ``epoch 2/3: loss=0.412345 ... val_auc=0.951234 (12.3 s)``."""
    return f"epoch {epoch + 1}/{epochs}: {_values(metrics)} ({seconds:.1f} s)"


def best_line(epoch: int, epochs: int, metrics: Mapping[str, float]) -> str:
    """Return the line naming the kept (best) 0-based ``epoch``: ``best epoch 2/3: loss=... val_auc=...``."""
    return f"best epoch {epoch + 1}/{epochs}: {_values(metrics)}"


def metric_regex(name: str) -> str:
    """Return the regex whose group 1 is metric ``name``'s value in an epoch or best line.

    Raises:
        ValueError: for a metric the lines do not carry.
    """
    if name not in METRICS:
        raise ValueError(f"metric {name!r}: expected one of {', '.join(METRICS)}")
    # The space before the name keeps "loss=" from matching inside "val_loss=" (no look-behind: the
    # tuner's regex engine is not documented to have it).
    return rf"epoch [0-9]+/[0-9]+:.*? {name}=({_NUMBER})"


def metric_definitions(names: Iterable[str] = METRICS) -> list[dict[str, str]]:
    """Return SageMaker MetricDefinitions ({"Name", "Regex"}) for the metrics ``names``."""
    return [{"Name": name, "Regex": metric_regex(name)} for name in names]


def read_metric(lines: Iterable[str], name: str) -> list[float]:
    """Return every value of metric ``name`` in ``lines``, in order (as a tuner scraping the log sees them)."""
    pattern = re.compile(metric_regex(name))
    return [float(found.group(1)) for line in lines if (found := pattern.search(line))]


__all__ = ["METRICS", "OBJECTIVES", "best_line", "epoch_line", "metric_definitions", "metric_regex", "read_metric"]
