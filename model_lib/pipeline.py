"""The DVC stages as functions: each reads its config and inputs and writes its outputs atomically.

``model-lib <stage>`` calls these; dvc.yaml declares the same paths (the defaults below).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model_lib._io import check_output_file, check_output_folder, write_json
from model_lib.config import EvaluateConfig, IngestConfig, PrepareConfig, TrainConfig
from model_lib.errors import OutputError

logger = logging.getLogger(__name__)

# models/cost.json of a train on this machine: no SageMaker bill (a remote train stage writes the job's).
LOCAL_COST = {"cost_usd": 0.0, "spot_saving_usd": 0.0, "trained_on": "local"}


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, relative to the working folder (the repo root for DVC)."""

    reviews: Path = Path("data/reviews.jsonl")
    prepared: Path = Path("data/prepared")
    models: Path = Path("models")
    reports: Path = Path("reports")
    checkpoints: Path = Path("checkpoints")

    @property
    def channels(self) -> dict[str, Path]:
        """Return the prepared file of each SageMaker channel."""
        from model_lib.prepared import channel_paths  # not at the top: `ingest` must not depend on it

        return channel_paths(self.prepared)

    @property
    def train(self) -> Path:
        return self.channels["train"]

    @property
    def test(self) -> Path:
        return self.channels["test"]

    @property
    def vocab(self) -> Path:
        return self.channels["vocab"]

    @property
    def embeddings(self) -> Path:
        return self.channels["embeddings"]

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
    def cost(self) -> Path:
        """What the training cost in US dollars (a train stage metric, so `dvc exp show` lists it)."""
        return self.models / "cost.json"

    @property
    def run_reference(self) -> Path:
        """The train run's id, which evaluate adds to: git-ignored and no DVC output (it names a run
        in this clone's MLflow store only, and changes every run)."""
        return self.models / "mlflow_run.json"


def ingest(config: IngestConfig, paths: Paths = Paths()) -> dict[str, Any]:
    """Read the review source, clean it and write one JSONL file; return counts.

    Raises:
        DataError: if the source is missing or malformed.
        OutputError: if the reviews file cannot be written (checked before the source is read).
    """
    from model_lib.data import load_reviews, write_reviews_jsonl

    check_output_file(paths.reviews, "the reviews")
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

    Writes the four SageMaker channels (the train/ and test/ split folders, vocab.txt,
    embeddings.npy) and a report (sizes, GloVe coverage); returns the report. The reviews file is
    read three times, never whole: its labels (for the split), the training texts (for the token
    counts), every text (encoded a chunk at a time). What stays in memory is the encoded ids,
    without padding, and the token counts.

    Raises:
        DataError, EmbeddingError: for missing or bad inputs, or an empty split.
        OutputError: if the prepared folder or a file in it cannot be written (checked first).
    """
    check_output_folder(paths.prepared, "the prepared files")  # before TensorFlow is imported
    for path in (paths.vocab, paths.embeddings, paths.prepare_report):
        check_output_file(path, "the prepared files")
    for path in (paths.train, paths.test):
        if path.is_file():
            raise OutputError(f"{path}: expected a folder (the split's parts), got a file; remove it")
    from model_lib.data import read_review_labels, split_rows
    from model_lib.embeddings import OOV_ID, embedding_matrix, load_glove
    from model_lib.prepared import save_embedding_matrix, write_split
    from model_lib.text import Vocabulary

    labels, sides = read_review_labels(paths.reviews)
    train_idx, test_idx = split_rows(labels, sides, test_size=config.test_size, seed=config.seed)
    in_train = np.zeros(len(labels), dtype=bool)
    in_train[train_idx] = True
    vocabulary = Vocabulary.fit(_texts_of(paths.reviews, in_train), max_size=config.vocab_size, min_count=config.min_count)
    glove = load_glove(config.glove, dim=config.embedding_dim, member=config.glove_member)
    matrix = embedding_matrix(glove, vocabulary.tokens, seed=config.seed)
    encoded = _encoded(vocabulary, paths.reviews, labels, config.max_length)
    write_split(paths.train, encoded, rows=train_idx, shard_reviews=config.shard_reviews)
    write_split(paths.test, encoded, rows=test_idx, shard_reviews=config.shard_reviews)
    vocabulary.save(paths.vocab)
    save_embedding_matrix(paths.embeddings, matrix.matrix)
    tokens = int((encoded.offsets[train_idx + 1] - encoded.offsets[train_idx]).sum())
    oov = sum(int((ids == OOV_ID).sum()) for ids in encoded.rows(train_idx)) / max(1, tokens)
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


_CHUNK = 16384  # reviews read and encoded at a time: ~64 MB of padded ids, however large the file


def _chunks(reviews: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (row of the chunk's first text, chunk) for the texts of the reviews file, in order."""
    from model_lib.data import review_text_chunks

    start = 0
    for chunk in review_text_chunks(reviews, _CHUNK):
        yield start, chunk
        start += len(chunk)


def _texts_of(reviews: Path, chosen: np.ndarray) -> Iterator[str]:
    """Yield the texts of the reviews file whose row is True in ``chosen``."""
    for start, chunk in _chunks(reviews):
        yield from (text for text, keep in zip(chunk, chosen[start : start + len(chunk)]) if keep)


def _encoded(vocabulary: Any, reviews: Path, labels: np.ndarray, max_length: int) -> Any:
    """Return every review of the file encoded (a :class:`~model_lib.prepared.Split` in file order),
    a chunk at a time: only the unpadded ids of the reviews are kept."""
    from model_lib.prepared import Split, vocabulary_digest

    pieces, lengths = [], []
    for start, chunk in _chunks(reviews):
        piece = Split.from_padded(vocabulary.encode(chunk, max_length), labels[start : start + len(chunk)])
        pieces.append(piece.ids)
        lengths.append(np.diff(piece.offsets))
        if start // _CHUNK % 8 == 7:
            logger.info("prepare: %d of %d reviews encoded", start + len(chunk), len(labels))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return Split(np.concatenate(pieces), offsets, labels, max_length, vocabulary_digest(vocabulary.tokens))


def train(
    config: TrainConfig,
    paths: Paths = Paths(),
    *,
    track: bool = True,
    verbose: int | str = "auto",
    register_model: str | None = None,
) -> dict[str, Any]:
    """Train on the prepared files, save the raw-string model and log the run to MLflow.

    An interrupted run (Ctrl-C, SIGTERM, a crash, the `dvc repro` running it killed) resumes from
    ``checkpoints/`` when run again, in the same MLflow run; a second training of ``checkpoints/``
    while one runs is refused. With ``register_model``, the logged model becomes a new version of that
    registered model.

    Returns:
        a summary: run id, epochs run, best epoch, training seconds, history (models/history.json
        holds it without the run id and the seconds, which differ between runs of the same inputs).

    Raises:
        ConfigError, DataError: for hyperparameters or prepared files that cannot work.
        FolderLockError: when another process trains with ``checkpoints/`` (it is named).
        TrainingInterrupted: when a stop signal arrived (the state is saved).
    """
    from model_lib.lifecycle import RunPaths, train_and_record
    from model_lib.parent_watch import stopping_when_parent_goes
    from model_lib.tracking.datasets import DataOrigin

    run_paths = RunPaths(
        model=paths.model,
        checkpoints=paths.checkpoints,
        summary=paths.history,
        run_reference=paths.run_reference,
        stable_summary=True,  # a DVC output: a rerun of the same inputs writes the same file
    )
    check_output_file(paths.cost, "the model")  # in models/: worded as the model's check
    with stopping_when_parent_goes():  # a stage left running by a killed `dvc repro` stops and saves
        summary = train_and_record(
            config,
            paths.channels,
            run_paths,
            track=track,
            tags={"model_lib.stage": "train"},
            verbose=verbose,
            register_model=register_model,
            data_origin=DataOrigin.from_dvc_config(),  # the DVC stage runs at the repo root
        )
    write_json(paths.cost, LOCAL_COST)
    return summary


def evaluate(config: EvaluateConfig, paths: Paths = Paths(), *, track: bool = True) -> dict[str, Any]:
    """Score the saved model on the test split, write metrics, plot data and figures; add them to
    the training run in MLflow. Returns the metrics.

    Raises:
        DataError: if the model, the history or the test split is missing or malformed, or the split
            was not encoded with the model's vocabulary and length (its scores would look plausible).
        OutputError: if the reports folder cannot be written (checked before the model loads).
        FolderLockError: with tracking, while another process trains with ``checkpoints/``.
    """
    from model_lib.inference import load_model, model_encoding
    from model_lib.lifecycle import evaluate_model
    from model_lib.locking import hold_training
    from model_lib.prepared import check_split_vocabulary, load_split
    from model_lib.tracking import MODEL_MD5_TAG, PENDING_FILE, MlflowTracker, file_md5, read_run_reference
    from model_lib.tracking.datasets import EVALUATION, DataOrigin, describe_inputs

    check_output_folder(paths.reports, "the reports")
    test = load_split(paths.test)  # its values are checked as its parts are read
    model = load_model(paths.model)
    encoding = model_encoding(model)
    if encoding is not None:  # an id-sequence model has no vocabulary to check against
        check_split_vocabulary(paths.test, test, paths.vocab, *encoding, paths.model)
    history = read_history(paths.history)
    model_md5 = file_md5(paths.model)
    run_id = read_run_reference(paths.run_reference, model_md5) if track else None
    # The pending file is the train stage's: if MLflow was down then, the run is created from it first.
    # Not while a training writes it (the folder's lock, held first).
    pending = paths.checkpoints / PENDING_FILE
    held = hold_training(paths.checkpoints if track and paths.checkpoints.is_dir() else None, purpose="evaluate")
    with held, MlflowTracker(run_id=run_id, pending_file=pending) if track else contextlib.nullcontext() as tracker:
        metrics = evaluate_model(model, test, paths.reports, config, history=history, tracker=tracker)
        if tracker is not None:
            if run_id is None:  # a run of its own: findable by the model it scored, as train's is
                tracker.set_tags({MODEL_MD5_TAG: model_md5})
            tracker.log_artifacts([paths.prepare_report], artifact_path="reports")
            inputs = {"test": paths.test, "vocab": paths.vocab}
            tracker.log_datasets(describe_inputs(inputs, DataOrigin.from_dvc_config(), context=EVALUATION))
    logger.info("evaluate: accuracy %.4f, ROC AUC %s", metrics["accuracy"], metrics["roc_auc"])
    return metrics


def read_history(path: Path) -> list[dict[str, Any]] | None:
    """Return the epochs of the training summary at ``path`` (None if there is no file).

    Raises:
        DataError: naming the file, if it is not a JSON object with a ``history`` list of epochs.
    """
    import json

    from model_lib.errors import DataError

    if not path.is_file():
        return None
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        history = json.loads(text).get("history")
    except (ValueError, AttributeError):
        history = None
    if not isinstance(history, list) or not all(isinstance(epoch, dict) for epoch in history):
        raise DataError(f"{path}: expected a JSON object with a 'history' list of epochs, got {text[:80]!r}")
    return history
