"""Scores and report files."""

import json

import numpy as np
import pytest

from model_lib.errors import DataError
from model_lib.evaluation import evaluate, write_report


def test_scores_of_a_known_example():
    metrics = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert metrics["accuracy"] == 0.5
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["f1"] == 0.5
    assert metrics["roc_auc"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]


def test_one_class_has_no_auc_and_mismatched_lengths_fail():
    assert evaluate([1, 1], [0.7, 0.2])["roc_auc"] is None
    with pytest.raises(DataError, match="2 labels but 3 predictions"):
        evaluate([0, 1], [0.1, 0.2, 0.3])


def test_report_writes_metrics_plot_data_and_figures(tmp_path):
    y = np.asarray([0, 1, 0, 1, 1])
    p = np.asarray([0.2, 0.8, 0.3, 0.4, 0.9])
    history = [
        {"epoch": 1, "loss": 0.6, "val_loss": 0.7, "accuracy": 0.6, "val_accuracy": 0.5},
        {"epoch": 2, "loss": 0.4, "val_loss": 0.5, "accuracy": 0.8, "val_accuracy": 0.7},
    ]
    metrics = write_report(tmp_path, y, p, history=history)
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == metrics["accuracy"] == 0.8
    assert (tmp_path / "confusion.csv").read_text().splitlines()[:2] == ["actual,predicted", "0,0"]
    assert (tmp_path / "roc.csv").read_text().startswith("fpr,tpr,threshold\n")
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,loss,val_loss,accuracy,val_accuracy"
    for figure in ("roc.png", "confusion_matrix.png", "training_curves.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predictions_that_are_not_finite_are_an_error():
    # NaN >= 0.5 is False: NaN predictions would score as "all negative", a plausible 0.5 accuracy.
    with pytest.raises(DataError, match=r"predictions: 2 of 4 are NaN or inf; expected probabilities"):
        evaluate([0, 0, 1, 1], [0.1, np.nan, np.nan, 0.9])


def test_labels_other_than_0_and_1_are_an_error():
    with pytest.raises(DataError, match=r"labels: expected 0 or 1, got 2"):
        evaluate([0, 2, 1], [0.1, 0.6, 0.9])


def test_report_of_one_class_has_no_roc_curve_and_no_nan(tmp_path):
    metrics = write_report(tmp_path, np.asarray([1, 1, 1]), np.asarray([0.2, 0.8, 0.9]))
    assert metrics["roc_auc"] is None and metrics["accuracy"] == pytest.approx(2 / 3)
    assert (tmp_path / "roc.csv").read_text() == "fpr,tpr,threshold\n"  # no curve, not a curve of NaN
    assert json.loads((tmp_path / "metrics.json").read_text())["roc_auc"] is None
    assert not (tmp_path / "roc.png").exists()
