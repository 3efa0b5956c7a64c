"""Scores of a binary classifier, and the files DVC and people read: JSON metrics, CSV plot data
(ROC curve, confusion rows, training curves) and PNG figures rendered offline with matplotlib.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_lib._io import atomic_path, write_json, write_text
from model_lib.errors import DataError


def evaluate(
    y_true: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Return accuracy, precision, recall, F1, ROC AUC and the confusion matrix as a dict.

    ``confusion_matrix`` is [[tn, fp], [fn, tp]] (rows: actual 0/1, columns: predicted 0/1).
    ROC AUC is null when the labels hold one class only.

    Raises:
        DataError: if the inputs differ in length or are empty, a label is not 0 or 1, or a
            prediction is NaN or infinite (NaN >= threshold is False: it would score as negative).
    """
    from sklearn import metrics

    labels = np.asarray(y_true).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(labels) != len(p):
        raise DataError(f"evaluate: {len(labels)} labels but {len(p)} predictions")
    if len(labels) == 0:
        raise DataError("evaluate: no predictions to score")
    wrong = ~np.isin(labels, (0, 1))
    if wrong.any():
        raise DataError(f"labels: expected 0 or 1, got {labels[wrong][0].item()!r} (row {int(np.flatnonzero(wrong)[0])})")
    broken = int((~np.isfinite(p)).sum())
    if broken:
        raise DataError(f"predictions: {broken} of {len(p)} are NaN or inf; expected probabilities (is the model broken?)")
    y = labels.astype(int)
    predicted = (p >= threshold).astype(int)
    matrix = metrics.confusion_matrix(y, predicted, labels=[0, 1])
    auc = float(metrics.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "roc_auc": auc,
        "confusion_matrix": matrix.tolist(),
        "threshold": threshold,
        "n": len(y),
    }


def _csv_text(header: Sequence[str], rows: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_roc_csv(path: str | os.PathLike[str], y_true: np.ndarray, probabilities: np.ndarray) -> None:
    """Write the ROC curve (fpr, tpr, threshold) as CSV, for ``dvc plots``: the header alone when
    the labels hold one class (the curve is undefined; sklearn would give NaN rates)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true).astype(int).reshape(-1)
    if len(np.unique(y)) < 2:
        write_text(path, _csv_text(["fpr", "tpr", "threshold"], []))
        return
    fpr, tpr, thresholds = roc_curve(y, np.asarray(probabilities).reshape(-1))
    thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf first; keep the file plain numbers
    rows = ((f"{a:.6f}", f"{b:.6f}", f"{c:.6f}") for a, b, c in zip(fpr, tpr, thresholds))
    write_text(path, _csv_text(["fpr", "tpr", "threshold"], rows))


def write_confusion_csv(path: str | os.PathLike[str], y_true: np.ndarray, probabilities: np.ndarray, threshold: float) -> None:
    """Write one (actual, predicted) row per review, the shape DVC's confusion template reads."""
    predicted = (np.asarray(probabilities).reshape(-1) >= threshold).astype(int)
    write_text(path, _csv_text(["actual", "predicted"], zip(np.asarray(y_true).astype(int), predicted)))


def write_history_csv(path: str | os.PathLike[str], history: Sequence[dict[str, float]]) -> None:
    """Write the per-epoch training history as CSV (one row per epoch)."""
    if not history:
        raise DataError("history: no epochs to write")
    columns = list(history[0])
    write_text(path, _csv_text(columns, ([row.get(c, "") for c in columns] for row in history)))


def _figure_to_png(figure: Any, path: str | os.PathLike[str]) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_training_curves(history: Sequence[dict[str, float]], path: str | os.PathLike[str]) -> None:
    """Write a PNG of loss and accuracy per epoch, training and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            if f"{prefix}{metric}" in history[0]:
                ax.plot(epochs, [row[f"{prefix}{metric}"] for row in history], style, label=f"{prefix or 'train_'}{metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    _figure_to_png(figure, path)


def plot_roc(y_true: np.ndarray, probabilities: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a PNG of the ROC curve with its AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, probabilities)
    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y_true, probabilities):.4f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (test split)")
    ax.legend(loc="lower right")
    _figure_to_png(figure, path)


def plot_confusion(matrix: Sequence[Sequence[int]], path: str | os.PathLike[str]) -> None:
    """Write a PNG of the 2x2 confusion matrix with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    figure, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(values, cmap="Blues")
    for (row, column), count in np.ndenumerate(values):
        color = "white" if count > values.max() / 2 else "black"
        ax.text(column, row, str(count), ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix (test split)")
    _figure_to_png(figure, path)


def write_report(
    directory: str | os.PathLike[str],
    y_true: np.ndarray,
    probabilities: np.ndarray,
    *,
    threshold: float = 0.5,
    history: Sequence[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Score the predictions and write every file into ``directory``; return the metrics dict.

    Files: ``metrics.json``, ``roc.csv``, ``confusion.csv``, ``roc.png``, ``confusion_matrix.png``
    and, with a history, ``history.csv`` and ``training_curves.png``.
    """
    out = Path(directory)
    y = np.asarray(y_true).astype(int).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    metrics = evaluate(y, p, threshold)
    write_json(out / "metrics.json", metrics)
    write_roc_csv(out / "roc.csv", y, p)
    write_confusion_csv(out / "confusion.csv", y, p, threshold)
    if metrics["roc_auc"] is not None:
        plot_roc(y, p, out / "roc.png")
    plot_confusion(metrics["confusion_matrix"], out / "confusion_matrix.png")
    if history:
        write_history_csv(out / "history.csv", history)
        plot_training_curves(history, out / "training_curves.png")
    return metrics
