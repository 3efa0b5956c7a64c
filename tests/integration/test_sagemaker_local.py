"""The real sagemaker-training toolkit `train` on a SAGEMAKER_BASE_DIR: success and each bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_lib.sagemaker.local import data_digests_env
from model_lib.sagemaker.supervise import run_toolkit
from model_lib.tracking.lineage import input_md5
from tests.conftest import logged_datasets, logged_model

pytestmark = pytest.mark.integration


def hyperparameters(base: Path) -> dict[str, str]:
    return json.loads((base / "input" / "config" / "hyperparameters.json").read_text())


def set_hyperparameters(base: Path, **values: str) -> None:
    path = base / "input" / "config" / "hyperparameters.json"
    path.write_text(json.dumps({**hyperparameters(base), **values}))


def failure(base: Path) -> str:
    return (base / "output" / "failure").read_text(encoding="utf-8")


def test_job_trains_and_writes_a_raw_string_model(sagemaker_base_dir):
    assert run_toolkit(sagemaker_base_dir, timeout=600) == 0
    model_dir = sagemaker_base_dir / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["metrics.json", "model.keras", "vocab.txt"]
    from model_lib.inference import load_model, predict

    probabilities = predict(load_model(model_dir / "model.keras"), ["a wonderful , moving film", "a dull , boring film"])
    assert probabilities.shape == (2,) and np.all((probabilities >= 0) & (probabilities <= 1))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 60 and 0 <= metrics["test"]["accuracy"] <= 1
    assert metrics["epochs_run"] == 1 and metrics["hyperparameters"]["epochs"] == 1
    assert {"history.csv", "roc.csv", "confusion.csv", "roc.png"} <= {
        p.name for p in (sagemaker_base_dir / "output" / "data").iterdir()
    }
    assert not (sagemaker_base_dir / "output" / "failure").exists()


def test_false_string_hyperparameter_is_false_in_the_job(sagemaker_base_dir):
    set_hyperparameters(sagemaker_base_dir, glove_init="False")  # not JSON: arrives as the string "False"
    assert run_toolkit(sagemaker_base_dir, timeout=600) == 0
    metrics = json.loads((sagemaker_base_dir / "model" / "metrics.json").read_text())
    assert metrics["hyperparameters"]["glove_init"] is False


def remove_channel(base: Path) -> None:
    shutil.rmtree(base / "input" / "data" / "vocab")
    config = base / "input" / "config" / "inputdataconfig.json"
    channels = json.loads(config.read_text())
    del channels["vocab"]
    config.write_text(json.dumps(channels))


def empty_channel(base: Path) -> None:
    for path in (base / "input" / "data" / "test").iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def crowd_channel(base: Path) -> None:
    (base / "input" / "data" / "vocab" / "extra.txt").write_bytes(b"second file")


def stray_file_in_a_split(base: Path) -> None:
    (base / "input" / "data" / "train" / "extra.npz").write_bytes(b"not a part")


def mismatch_vocab(base: Path) -> None:
    vocab = next((base / "input" / "data" / "vocab").iterdir())
    vocab.write_text("just\nthree\nwords\n", encoding="utf-8")


def unwritable_model_dir(base: Path) -> None:
    (base / "model").rmdir()
    (base / "model").write_text("a file where the model folder should be")


@pytest.mark.parametrize(
    "break_job,expected",
    [
        (
            lambda b: set_hyperparameters(b, epochs='"three"'),
            "ConfigError: hyperparameters.epochs: expected an integer, got 'three'",
        ),
        (lambda b: set_hyperparameters(b, epoch="3"), "ConfigError: hyperparameters: unknown key 'epoch'"),
        (remove_channel, "SageMakerEnvironmentError: channel 'vocab' is missing"),
        (empty_channel, "SageMakerEnvironmentError: channel 'test': "),
        (crowd_channel, "SageMakerEnvironmentError: channel 'vocab': "),
        (stray_file_in_a_split, "DataError: "),
        (mismatch_vocab, "DataError: embeddings: "),
        (unwritable_model_dir, "SageMakerEnvironmentError: SM_MODEL_DIR="),
    ],
    ids=[
        "wrong-type",
        "unknown-hyperparameter",
        "missing-channel",
        "empty-channel",
        "multi-file-channel",
        "stray-file-in-a-split",
        "vocab-embeddings-mismatch",
        "unwritable-model-dir",
    ],
)
def test_bad_input_fails_with_a_failure_file_naming_the_cause(sagemaker_base_dir, break_job, expected):
    break_job(sagemaker_base_dir)
    assert run_toolkit(sagemaker_base_dir, timeout=600) != 0
    assert failure(sagemaker_base_dir).startswith(expected)


def test_job_logs_to_the_mlflow_server_named_at_launch(sagemaker_base_dir, mlflow_server, tiny_prepared):
    import mlflow

    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "sagemaker-local-test",
           "MODEL_LIB_MLFLOW_TAGS": '{"launched_by": "test"}',
           "MODEL_LIB_DATA_REMOTE": "s3://bucket/dvc",  # as `model-lib launch` sets it, and the splits' .dir md5s
           **data_digests_env(tiny_prepared)}  # fmt: skip
    assert run_toolkit(sagemaker_base_dir, extra_env=env, timeout=600) == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("sagemaker-local-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["epochs"] == "1" and "test_accuracy" in run.data.metrics
    # The job's host's system metrics (one host: no host in the names; the last sample is taken at the end).
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_percentage", "system/disk_usage_megabytes",
            "system/network_transmit_megabytes"} <= set(run.data.metrics), sorted(run.data.metrics)  # fmt: skip
    assert run.data.tags["launched_by"] == "test" and run.data.tags["model_lib.stage"] == "sagemaker"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server, no store access
    logged_model(client, run.info.run_id)  # the run's logged model, READY
    # Each channel is a dataset of the run, its source the DVC remote object the channel came from.
    md5s = {name: input_md5(path) for name, path in tiny_prepared.items()}
    datasets = logged_datasets(client, run.info.run_id)
    assert {n: d["digest"] for n, d in datasets.items()} == md5s
    assert {n: d["source"] for n, d in datasets.items()} == {
        n: f"s3://bucket/dvc/files/md5/{m[:2]}/{m[2:]}" for n, m in md5s.items()
    }
    assert {d["source_type"] for d in datasets.values()} == {"s3"}
    assert (datasets["test"]["context"], datasets["train"]["context"]) == ("evaluation", "training")
    assert datasets["train"]["rows"] > datasets["test"]["rows"] > 0 and datasets["vocab"]["rows"] is None
