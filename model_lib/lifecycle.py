"""One run lifecycle for every front door: the DVC stage and the SageMaker job both call
:func:`train_and_record`, and differ only in paths, tags and where reports go.

Open (or reopen) the MLflow run -> log params and lineage -> train (resuming from checkpoints) ->
save the raw-string model -> evaluate where asked -> log metrics and the model -> retire the
checkpoints -> end the run. Any failure ends the run FAILED; a stop signal ends it KILLED, and the
next start with the same checkpoint folder reopens it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_lib._io import check_output_file, check_output_folder, write_json
from model_lib.config import EvaluateConfig, TrainConfig, check_train_fits_data, effective_hyperparameters
from model_lib.locking import hold_training
from model_lib.prepared import PreparedData, Split, load_prepared, split_shape
from model_lib.tracking import (
    MODEL_MD5_TAG,
    PENDING_FILE,
    NullTracker,
    Tracker,
    check_model_name,
    file_md5,
    lineage_tags,
    open_tracker,
    write_run_reference,
)
from model_lib.tracking.datasets import DataOrigin, describe_inputs

if TYPE_CHECKING:
    from model_lib.distributed import Cluster

logger = logging.getLogger(__name__)

# What the logged MLflow model shows as its input example.
EXAMPLE_REVIEWS = ("A moving, beautifully acted film.", "Dull, predictable and far too long.")
FIGURES = ("training_curves.png", "roc.png", "confusion_matrix.png")
# What differs between two trainings of the same params and data: left out of a summary that DVC
# tracks (a rerun must change nothing there). MLflow and the log lines have them.
RUN_SPECIFIC = ("train_seconds", "run_id")
TIMINGS = ("predict_seconds",)  # the same, of the test metrics


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where one training writes: the model, its checkpoints and, optionally, reports and the run reference."""

    model: Path
    checkpoints: Path
    summary: Path
    reports: Path | None = None  # evaluate on the test split and write the report files here
    run_reference: Path | None = None  # the MLflow run id, for a later stage (DVC's evaluate)
    vocabulary: Path | None = None  # a copy of the vocabulary beside the model
    keep_final_checkpoint: bool = False  # leave the last generation (retired) in the checkpoint folder
    stable_summary: bool = False  # the summary without RUN_SPECIFIC (a DVC output: the same for the same inputs)


def stable_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``summary`` without what differs between two trainings of the same inputs
    (:data:`RUN_SPECIFIC`: the seconds, the run id)."""
    return {key: value for key, value in summary.items() if key not in RUN_SPECIFIC}


def check_run_outputs(paths: RunPaths) -> None:
    """Check every place the run writes can be written, before data load, a run opens or training.

    Raises:
        OutputError: naming the first path that cannot be written and why.
    """
    check_output_file(paths.model, "the model")
    for path in (paths.summary, paths.run_reference, paths.vocabulary):
        if path is not None:
            check_output_file(path, "the model")
    check_output_folder(paths.checkpoints, "the checkpoints")
    if paths.reports is not None:
        check_output_folder(paths.reports, "the reports")


def load_checked(config: TrainConfig, files: Mapping[str, str | os.PathLike[str]], *, some_parts: bool = False) -> PreparedData:
    """Return the prepared data, after checking (from the file headers alone) that ``config`` can
    train on them. With ``some_parts`` (a host of a multi-host job, whose train channel may be
    sharded) the train folder may hold some parts of its split: training makes it whole (model_lib.shards).

    Raises:
        ConfigError: if a hyperparameter cannot work with these data (found before they load).
        DataError: if a file is missing or malformed, or the files do not fit together.
    """
    effective_hyperparameters(config)  # raises for hyperparameters that cannot work together
    check_train_fits_data(config, split_shape(files["train"], some_parts=some_parts))
    return load_prepared(files["train"], files["test"], files["vocab"], files["embeddings"], some_parts=some_parts)


def evaluate_model(
    model: Any,
    test: Split,
    reports: Path,
    config: EvaluateConfig,
    *,
    history: list[dict[str, float]] | None = None,
    tracker: Tracker | NullTracker | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the ``test`` split, write metrics, plot data and figures into ``reports``, and
    add them to the tracker's run (None: tracking off); return the metrics (with ``predict_seconds``,
    which MLflow gets and metrics.json does not: a DVC metric that changed every run would be noise)."""
    import time

    from model_lib import evaluation
    from model_lib.inference import predict_encoded

    started = time.perf_counter()
    probabilities = predict_encoded(model, test)
    seconds = time.perf_counter() - started
    metrics = evaluation.write_report(reports, test.labels, probabilities, threshold=config.threshold, history=history)
    write_json(reports / "metrics.json", {k: v for k, v in metrics.items() if k not in TIMINGS})
    metrics["predict_seconds"] = round(seconds, 3)
    tracker = tracker if tracker is not None else NullTracker()  # pipeline.evaluate passes None for tracking off
    tracker.log_params({f"evaluate.{k}": v for k, v in dataclasses.asdict(config).items()})
    tracker.log_metrics(metrics, prefix="test_")
    tracker.log_artifacts([reports / name for name in FIGURES], artifact_path="figures")
    tracker.log_artifacts([reports / "metrics.json"], artifact_path="reports")
    return metrics


def train_and_record(
    config: TrainConfig,
    files: Mapping[str, str | os.PathLike[str]],
    paths: RunPaths,
    *,
    track: bool = True,
    tags: Mapping[str, str] | None = None,
    evaluate_config: EvaluateConfig = EvaluateConfig(),
    verbose: int | str = "auto",
    register_model: str | None = None,
    cluster: Cluster | None = None,
    lock_wait: float = 0.0,
    data_origin: DataOrigin = DataOrigin(),
) -> dict[str, Any]:
    """Train on the prepared ``files`` (by channel name) and record the run; return the summary.

    With a multi-host ``cluster`` every host calls this; only the coordinator records anything
    (model, reports, checkpoints, MLflow): the others train their shards and return
    ``{"host": ..., "epochs_run": ...}`` (see :func:`train_as_worker`).

    The summary (written to ``paths.summary``): epochs run, best epoch, training seconds, the
    effective hyperparameters, the history, the MLflow run id and, with ``paths.reports``, the test
    metrics. With ``register_model`` (and tracking), the logged model becomes a new version of that
    registered model. Each file becomes an MLflow dataset of the run, its source found through
    ``data_origin`` (default: the file's path).

    One training of a checkpoint folder at a time: another process training it (a second
    `model-lib train`, an orphan of a stopped `dvc repro`, a stopped job still saving) is waited for
    up to ``lock_wait`` seconds, then refused.

    Raises:
        ConfigError, DataError: for hyperparameters or data that cannot work (before training starts).
        OutputError: for an output that cannot be written (checked first; a full disk later names the file).
        FolderLockError: when another process trains with the same checkpoint folder (it is named).
        TrainingInterrupted: when a stop signal arrived; the state is saved and the run ends KILLED.
    """
    if cluster is not None and not cluster.is_coordinator:
        return train_as_worker(config, files, cluster, verbose=verbose)
    check_run_outputs(paths)  # before TensorFlow loads: a save that fails after the training costs it all
    with hold_training(paths.checkpoints, wait=lock_wait):
        return _train_and_record_holding_the_folder(
            config, files, paths, track=track, tags=tags, evaluate_config=evaluate_config, verbose=verbose,
            register_model=register_model, cluster=cluster, data_origin=data_origin,
        )  # fmt: skip


def _train_and_record_holding_the_folder(
    config: TrainConfig,
    files: Mapping[str, str | os.PathLike[str]],
    paths: RunPaths,
    *,
    track: bool,
    tags: Mapping[str, str] | None,
    evaluate_config: EvaluateConfig,
    verbose: int | str,
    register_model: str | None,
    cluster: Cluster | None,
    data_origin: DataOrigin,
) -> dict[str, Any]:
    """:func:`train_and_record` once this process holds the checkpoint folder; return the summary."""
    from model_lib import checkpoints, training
    from model_lib.export import save_model, save_raw_string_model

    if register_model:
        _check_registration(register_model, track)
    data = load_checked(config, files, some_parts=cluster is not None and cluster.multi_host)
    tracker, lineage = _open_tracker(track, files, paths, training.fingerprint(config, data), tags, data_origin.digests)
    # Each host of a multi-host job its own series (system/<host>/...); one host: system/...
    node = cluster.current_host if cluster is not None and cluster.multi_host else None
    with tracker, tracker.monitor_system(node):
        if tracker.reopened:
            logger.info("reopening MLflow run %s", tracker.run_id)
            tracker.count_restart()
        else:
            tracker.log_params(training.effective_hyperparameters(config))
            tracker.set_tags(lineage)
            if track:
                tracker.log_datasets(describe_inputs(files, data_origin))
        result = training.run(
            config,
            data,
            checkpoint_dir=paths.checkpoints,
            tracker=tracker,
            verbose=verbose,
            run_id=tracker.run_id,
            cluster=cluster,
        )
        if result.raw_model is not None:
            save_model(result.raw_model, paths.model)
        else:  # trained on JAX: the raw-string model is built on the TensorFlow backend
            save_raw_string_model(result.model, data.vocabulary, data.max_length, paths.model)
        model_md5 = file_md5(paths.model)
        tracker.set_tags({MODEL_MD5_TAG: model_md5})  # dvc.lock's md5 of the model finds its run
        if paths.vocabulary is not None:
            data.vocabulary.save(paths.vocabulary)
        summary: dict[str, Any] = {
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.train_seconds, 2),
            "hyperparameters": result.hyperparameters,
            "history": result.history,
        }
        if paths.reports is not None:
            summary["test"] = evaluate_model(
                result.model, data.test, paths.reports, evaluate_config, history=result.history, tracker=tracker
            )
        tracker.log_metrics({"train_seconds": result.train_seconds, "best_epoch": result.best_epoch})
        tracker.log_model(result.raw_model, paths.model, EXAMPLE_REVIEWS, step=max(0, result.best_epoch - 1))
        if register_model:
            tracker.register_model(register_model)
        if track:
            summary["run_id"] = _record_run_id(tracker, paths, model_md5)
        write_json(paths.summary, stable_summary(summary) if paths.stable_summary else summary)
        checkpoints.clear(paths.checkpoints, keep_last=paths.keep_final_checkpoint)
    return summary


def _check_registration(name: str, track: bool) -> None:
    """Check ``name`` can be registered, before anything trains.

    Raises:
        ConfigError: for a malformed name, or with tracking off.
    """
    from model_lib.errors import ConfigError

    check_model_name(name)
    if not track:
        raise ConfigError(f"--register-model {name}: registering needs MLflow tracking, which is off")


def _record_run_id(tracker: Tracker | NullTracker, paths: RunPaths, model_md5: str) -> str | None:
    """Write the run id and the model's MD5 to ``paths.run_reference`` (if any); return the run id."""
    if paths.run_reference is not None:
        # Again at the end: `remember` wrote it when the run was created, but a run never created
        # (server down throughout) is recorded as null, and an older file may name another run.
        write_run_reference(paths.run_reference, tracker.run_id, model_md5)
    return tracker.run_id


def _open_tracker(
    track: bool,
    files: Mapping[str, str | os.PathLike[str]],
    paths: RunPaths,
    identity: dict[str, Any],
    tags: Mapping[str, str] | None,
    digests: Mapping[str, str] | None = None,
) -> tuple[Tracker | NullTracker, dict[str, str]]:
    """Return the run's tracker (a NullTracker with tracking off) and the lineage tags for a new run.

    The tracker reopens the run the checkpoint folder names for this training (``identity``), keeps
    its pending records in that folder, and writes the run reference once the run exists.

    Raises:
        ConfigError: if the tracking configuration cannot work or the server refuses this process.
    """
    from model_lib import checkpoints

    if not track:
        return NullTracker(), {}

    def remember(run_id: str) -> None:
        checkpoints.write_run_reference(paths.checkpoints, run_id, identity)
        if paths.run_reference is not None:
            write_run_reference(paths.run_reference, run_id)

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    tracker = open_tracker(
        run_id=checkpoints.read_run_reference(paths.checkpoints, identity),
        pending_file=paths.checkpoints / PENDING_FILE,
        on_run_id=remember,
    )
    return tracker, {**lineage_tags(files, digests=digests), **(tags or {})}


def train_as_worker(
    config: TrainConfig, files: Mapping[str, str | os.PathLike[str]], cluster: Cluster, *, verbose: int | str = "auto"
) -> dict[str, Any]:
    """Train this host's shards in lockstep with the coordinator and write nothing but this host's
    system metrics into the coordinator's MLflow run (``system/<host>/...``); return
    ``{"host": ..., "epochs_run": ...}``.

    Raises:
        ConfigError, DataError: as the coordinator would (every host checks the same data).
        ClusterError: if another host died or stopped answering.
        TrainingInterrupted: when a stop signal reached any host (the coordinator saved the state).
    """
    from model_lib import training
    from model_lib.tracking import host_monitor, system_metrics_settings

    system_metrics_settings()  # a bad switch fails here, before training, as on the coordinator
    data = load_checked(config, files, some_parts=cluster.multi_host)
    result = training.run(
        config, data, verbose=verbose, cluster=cluster,
        while_training=lambda run_id: host_monitor(run_id, node=cluster.current_host),
    )  # fmt: skip
    return {"host": cluster.current_host, "epochs_run": len(result.history)}
