"""What the script-mode entry point does: read the container, train through the one training path,
write the model and reports, and on any failure write a readable reason to ``$SM_OUTPUT_DIR/failure``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_lib.errors import SageMakerEnvironmentError, TrainingInterrupted
from model_lib.tracking.registered import JOB_NAME_TAG

logger = logging.getLogger(__name__)

# A job started while its predecessor (stopped, restarted in the same checkpoint folder) still
# saves its state waits this long for it to let go of the folder, then fails naming it.
PREDECESSOR_WAIT_SECONDS = 120.0


def _check_writable(folder: Path, variable: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SageMakerEnvironmentError(f"{variable}={folder} is not writable ({exc.strerror})") from None


def train_job(environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Run one training job from the SageMaker environment; return its summary (test metrics under "test").

    Writes ``model.keras`` (raw-string model), ``vocab.txt`` and ``metrics.json`` to SM_MODEL_DIR;
    ``metrics.json``, ``history.csv``, ``roc.csv``, ``confusion.csv`` and PNG figures to
    SM_OUTPUT_DATA_DIR. Checkpoints go to the checkpoint folder (never SM_MODEL_DIR, which would bloat
    model.tar.gz) and a restarted job resumes there, in the same MLflow run. Logs to MLflow only when
    MLFLOW_TRACKING_URI is set.

    Raises:
        SageMakerEnvironmentError, ConfigError, DataError: for a bad contract, hyperparameter or channel.
        FolderLockError: if another process still trains with the checkpoint folder after
            :data:`PREDECESSOR_WAIT_SECONDS`.
        TrainingInterrupted: when SIGTERM arrived (the state is saved for the restarted job).
    """
    from model_lib.config import TrainConfig, from_mapping
    from model_lib.prepared import CHANNELS
    from model_lib.sagemaker.environment import SageMakerEnvironment
    from model_lib.sagemaker.jobs import MODEL_FILE, SUMMARY_FILE

    # The contract is checked before TensorFlow is imported, so a bad job fails in a second.
    env = SageMakerEnvironment.from_env(environ, argv)
    config = from_mapping(TrainConfig, env.hyperparameters, "hyperparameters")
    # A directory channel (a DVC directory output) is passed as its folder, a one-file channel as its file.
    files = {name: env.channel_input(name) for name in CHANNELS}
    _check_writable(env.model_dir, "SM_MODEL_DIR")
    _check_writable(env.output_data_dir, "SM_OUTPUT_DATA_DIR")

    from model_lib.lifecycle import RunPaths, train_and_record
    from model_lib.tracking.datasets import DataOrigin

    paths = RunPaths(
        model=env.model_dir / MODEL_FILE,
        checkpoints=env.checkpoint_dir,
        summary=env.model_dir / SUMMARY_FILE,
        reports=env.output_data_dir,
        vocabulary=env.model_dir / "vocab.txt",
        keep_final_checkpoint=True,  # SageMaker syncs it to checkpoint_s3_uri: the job's final state stays there
    )
    tags = {"model_lib.stage": "sagemaker", JOB_NAME_TAG: str(env.job_name)}
    cluster = env.cluster
    if cluster.multi_host:
        tags["model_lib.hosts"] = str(cluster.num_processes)
        role = "coordinator" if cluster.is_coordinator else "worker"
        logger.info("job %s: host %s, %s of %d hosts", env.job_name, cluster.current_host, role, cluster.num_processes)
    logger.info("job %s: training %s", env.job_name, config.model)
    return train_and_record(
        config,
        files,
        paths,
        track=env.tracking_configured,
        tags=tags,
        verbose=2,
        register_model=env.register_model,
        cluster=cluster if cluster.multi_host else None,
        lock_wait=PREDECESSOR_WAIT_SECONDS,
        # Each channel was downloaded from its DVC object: the run's datasets name those objects.
        data_origin=DataOrigin(env.data_remote, known_present=True, digests=env.data_digests),
    )


def write_failure(exc: BaseException, environ: Mapping[str, str] | None = None) -> Path | None:
    """Write the exception's type and message (then the traceback) to the failure file; return its path."""
    from model_lib.redaction import redact
    from model_lib.sagemaker.environment import output_dir_for_failure

    folder = output_dir_for_failure(environ)
    # SageMaker shows the failure file to anyone allowed DescribeTrainingJob (FailureReason).
    reason = redact(f"{type(exc).__name__}: {exc}\n\n{''.join(traceback.format_exception(exc))}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failure").write_text(reason, encoding="utf-8")
        return folder / "failure"
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry-point main: run the job; on failure write the failure file and return 1.

    A host of a multi-host job that fails (or is stopped) leaves at once (``os._exit``), without
    jax.distributed's shutdown barrier: the others would otherwise wait for it there (up to
    ``distributed.SHUTDOWN_TIMEOUT_SECONDS``) or in their next step; its closed connections make
    them fail within seconds, each with its own failure file.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model_lib.redaction import install, redact

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install()  # the job's log goes to CloudWatch: no credential in it
    try:
        summary = train_job(argv=sys.argv[1:] if argv is None else argv)
    except TrainingInterrupted as exc:
        # Not a failure: SageMaker restarts a spot job, which resumes from the checkpoints.
        print(str(exc), file=sys.stderr)
        return _leave(exc.exit_code)
    except Exception as exc:  # every failure must reach the failure file, not only ours
        where = write_failure(exc)
        print(redact(f"training failed: {type(exc).__name__}: {exc}"), file=sys.stderr)
        if where is not None:
            print(f"reason written to {where}", file=sys.stderr)
        return _leave(1)
    except BaseException:  # a second signal (KeyboardInterrupt) or SystemExit: no shutdown barrier either
        _leave(130)
        raise
    if "test" in summary:
        print(f"training finished: test accuracy {summary['test']['accuracy']:.4f}")
    else:
        print(f"training finished: host {summary.get('host')} trained its shards; the coordinator writes the model")
    return 0


def _leave(code: int) -> int:
    """Return ``code``, or end the process with it now when it is part of a multi-host job."""
    from model_lib.distributed import joined

    if joined():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
