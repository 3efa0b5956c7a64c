"""The DVC stages as functions: each reads its config and inputs and writes its outputs atomically.

``model-lib <stage>`` calls these; dvc.yaml declares the same paths (the defaults below).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from model_lib._io import atomic_path, write_json
from model_lib.config import EvaluateConfig, IngestConfig, PrepareConfig, TrainConfig, to_dict

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, relative to the working folder (the repo root for DVC)."""

    reviews: Path = Path("data/reviews.jsonl")
    prepared: Path = Path("data/prepared")
    models: Path = Path("models")
    reports: Path = Path("reports")
    checkpoints: Path = Path("checkpoints")

    @property
    def train(self) -> Path:
        return self.prepared / "train.npz"

    @property
    def test(self) -> Path:
        return self.prepared / "test.npz"

    @property
    def vocab(self) -> Path:
        return self.prepared / "vocab.txt"

    @property
    def embeddings(self) -> Path:
        return self.prepared / "embeddings.npy"

    @property
    def prepare_report(self) -> Path:
        return self.prepared / "prepare.json"

    @property
    def model(self) -> Path:
        return self.models / "model.keras"

    @property
    def history(self) -> Path:
        return self.models / "history.json"

    @property
    def run_reference(self) -> Path:
        return self.models / "mlflow_run.json"


def ingest(config: IngestConfig, paths: Paths = Paths()) -> dict[str, Any]:
    """Read the review source, clean it and write one JSONL file; return counts.

    Raises:
        DataError: if the source is missing or malformed.
    """
    from model_lib.data import load_reviews, write_reviews_jsonl

    reviews = load_reviews(config.source, on_decode_error=config.on_decode_error).subset(config.limit, config.seed)
    write_reviews_jsonl(reviews, paths.reviews)
    positives = int(reviews.labels.sum())
    summary = {
        "reviews": len(reviews),
        "positive": positives,
        "negative": len(reviews) - positives,
        "decode_errors": reviews.decode_errors,
    }
    logger.info("ingest: %s", summary)
    return summary


def prepare(config: PrepareConfig, paths: Paths = Paths()) -> dict[str, Any]:
    """Split, fit the vocabulary on the training split, encode both splits and build the GloVe matrix.

    Writes the four SageMaker channel files (train.npz, test.npz, vocab.txt, embeddings.npy) and a
    report (sizes, GloVe coverage); returns the report.

    Raises:
        DataError, EmbeddingError: for missing or bad inputs, or an empty split.
    """
    from model_lib.data import read_reviews_jsonl, split_indices
    from model_lib.embeddings import embedding_matrix, load_glove
    from model_lib.text import Vocabulary
    from model_lib.training import save_split

    reviews = read_reviews_jsonl(paths.reviews)
    train_idx, test_idx = split_indices(reviews, test_size=config.test_size, seed=config.seed)
    vocabulary = Vocabulary.fit([reviews.texts[i] for i in train_idx], max_size=config.vocab_size, min_count=config.min_count)
    glove = load_glove(config.glove, dim=config.embedding_dim, member=config.glove_member)
    matrix = embedding_matrix(glove, vocabulary.tokens, seed=config.seed)
    ids = vocabulary.encode(reviews.texts, config.max_length)
    save_split(paths.train, ids[train_idx], reviews.labels[train_idx])
    save_split(paths.test, ids[test_idx], reviews.labels[test_idx])
    vocabulary.save(paths.vocab)
    with atomic_path(paths.embeddings, suffix=".npy") as tmp:
        np.save(tmp, matrix.matrix)
    oov = float((ids[train_idx] == 1).sum() / max(1, (ids[train_idx] > 0).sum()))
    report = {
        "train_reviews": len(train_idx),
        "test_reviews": len(test_idx),
        "vocabulary_tokens": len(vocabulary),
        "glove_coverage": round(matrix.coverage, 6),
        "train_oov_token_share": round(oov, 6),
    }
    write_json(paths.prepare_report, report)
    logger.info("prepare: %s", report)
    return report


def train(config: TrainConfig, paths: Paths = Paths(), *, track: bool = True, verbose: int | str = "auto") -> dict[str, Any]:
    """Train on the prepared files, save the raw-string model and log the run to MLflow.

    Returns:
        a summary: run id, epochs run, best epoch, training seconds.
    """
    from model_lib import training
    from model_lib.tracking import MlflowTracker, lineage_tags, write_run_reference

    data = training.load_prepared(paths.train, paths.test, paths.vocab, paths.embeddings)
    inputs = {"train": paths.train, "test": paths.test, "vocab": paths.vocab, "embeddings": paths.embeddings}
    tracker = MlflowTracker() if track else None
    try:
        if tracker is not None:
            tracker.log_params(training.effective_hyperparameters(config))
            tracker.set_tags({**lineage_tags(inputs), "model_lib.stage": "train"})
        result = training.run(config, data, checkpoint_dir=paths.checkpoints, tracker=tracker, verbose=verbose)
        training.save_model(result.raw_model, paths.model)
        summary = {
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.train_seconds, 2),
            "hyperparameters": result.hyperparameters,
            "history": result.history,
        }
        if tracker is not None:
            tracker.log_metrics({"train_seconds": result.train_seconds, "best_epoch": result.best_epoch})
            examples = ["A moving, beautifully acted film.", "Dull, predictable and far too long."]
            tracker.log_raw_text_model(result.raw_model, examples)
            write_run_reference(paths.run_reference, tracker)
            summary["run_id"] = tracker.run_id
        write_json(paths.history, summary)
        training.clear_checkpoints(paths.checkpoints)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.end()
    return summary


def evaluate(config: EvaluateConfig, paths: Paths = Paths(), *, track: bool = True) -> dict[str, Any]:
    """Score the saved model on the test split, write metrics, plot data and figures; add them to
    the training run in MLflow. Returns the metrics.
    """
    import json

    import keras

    from model_lib import evaluation, training
    from model_lib.tracking import MlflowTracker, read_run_reference

    x_test, y_test = training.load_split(paths.test)
    raw_model = training.load_model(paths.model)
    core = next(layer for layer in raw_model.layers if isinstance(layer, keras.Model))
    started = time.perf_counter()
    probabilities = np.asarray(core.predict(x_test, batch_size=512, verbose=0)).reshape(-1)
    history = json.loads(paths.history.read_text(encoding="utf-8"))["history"] if paths.history.is_file() else None
    metrics = evaluation.write_report(paths.reports, y_test, probabilities, threshold=config.threshold, history=history)
    metrics["predict_seconds"] = round(time.perf_counter() - started, 3)
    write_json(paths.reports / "metrics.json", metrics)
    run_id = read_run_reference(paths.run_reference)
    if track:
        with MlflowTracker(run_id=run_id) as tracker:
            tracker.log_params({f"evaluate.{k}": v for k, v in to_dict(config).items()})
            tracker.log_metrics(metrics, prefix="test_")
            figures = [paths.reports / n for n in ("training_curves.png", "roc.png", "confusion_matrix.png")]
            tracker.log_artifacts(figures, artifact_path="figures")
            tracker.log_artifacts([paths.reports / "metrics.json", paths.prepare_report], artifact_path="reports")
    logger.info("evaluate: accuracy %.4f, ROC AUC %s", metrics["accuracy"], metrics["roc_auc"])
    return metrics
