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

from model_lib.errors import SageMakerEnvironmentError

logger = logging.getLogger(__name__)


def _check_writable(folder: Path, variable: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SageMakerEnvironmentError(f"{variable}={folder} is not writable ({exc.strerror})") from None


def train_job(environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> dict[str, object]:
    """Run one training job from the SageMaker environment; return the test metrics.

    Writes ``model.keras`` (raw-string model), ``vocab.txt`` and ``metrics.json`` to SM_MODEL_DIR;
    ``history.csv``, ``roc.csv``, ``confusion.csv`` and PNG figures to SM_OUTPUT_DATA_DIR.
    Checkpoints go to the checkpoint folder (never SM_MODEL_DIR) and a restarted job resumes there.
    Logs to MLflow only when MLFLOW_TRACKING_URI is set.

    Raises:
        SageMakerEnvironmentError, ConfigError, DataError: for a bad contract, hyperparameter or channel.
    """
    from model_lib._io import write_json
    from model_lib.config import TrainConfig, from_mapping
    from model_lib.sagemaker.environment import REQUIRED_CHANNELS, SageMakerEnvironment

    # The contract is checked before TensorFlow is imported, so a bad job fails in a second.
    env = SageMakerEnvironment.from_env(environ, argv)
    config = from_mapping(TrainConfig, env.hyperparameters, "hyperparameters")
    files = {name: env.channel(name).file for name in REQUIRED_CHANNELS}
    _check_writable(env.model_dir, "SM_MODEL_DIR")
    _check_writable(env.output_data_dir, "SM_OUTPUT_DATA_DIR")

    from model_lib import evaluation, training

    data = training.load_prepared(files["train"], files["test"], files["vocab"], files["embeddings"])
    logger.info("job %s: %s on %d train / %d test reviews", env.job_name, config.model, len(data.x_train), len(data.x_test))

    tracker = None
    if (os.environ if environ is None else environ).get("MLFLOW_TRACKING_URI"):
        from model_lib.tracking import MlflowTracker, lineage_tags

        tracker = MlflowTracker()
        tracker.log_params(training.effective_hyperparameters(config))
        tracker.set_tags({**lineage_tags(files), "model_lib.stage": "sagemaker", "sagemaker.job_name": str(env.job_name)})
    try:
        result = training.run(config, data, checkpoint_dir=env.checkpoint_dir, tracker=tracker, verbose=2)
        training.save_model(result.raw_model, env.model_dir / "model.keras")
        data.vocabulary.save(env.model_dir / "vocab.txt")
        probabilities = result.model.predict(data.x_test, batch_size=512, verbose=0).reshape(-1)
        metrics = evaluation.write_report(env.output_data_dir, data.y_test, probabilities, history=result.history)
        write_json(
            env.model_dir / "metrics.json",
            {
                **metrics,
                "best_epoch": result.best_epoch,
                "train_seconds": result.train_seconds,
                "hyperparameters": result.hyperparameters,
            },
        )
        if tracker is not None:
            tracker.log_metrics(metrics, prefix="test_")
            tracker.log_raw_text_model(result.raw_model, ["A moving, beautifully acted film.", "Dull and far too long."])
            tracker.end()
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    return metrics


def write_failure(exc: BaseException, environ: Mapping[str, str] | None = None) -> Path | None:
    """Write the exception's type and message (then the traceback) to the failure file; return its path."""
    from model_lib.sagemaker.environment import output_dir_for_failure

    folder = output_dir_for_failure(environ)
    reason = f"{type(exc).__name__}: {exc}\n\n{''.join(traceback.format_exception(exc))}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failure").write_text(reason, encoding="utf-8")
        return folder / "failure"
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry-point main: run the job; on failure write the failure file and return 1."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        metrics = train_job(argv=sys.argv[1:] if argv is None else argv)
    except Exception as exc:  # every failure must reach the failure file, not only ours
        where = write_failure(exc)
        print(f"training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if where is not None:
            print(f"reason written to {where}", file=sys.stderr)
        return 1
    print(f"training finished: test accuracy {metrics['accuracy']:.4f}")
    return 0
