"""One run lifecycle behind both front doors (the DVC stage and the SageMaker job): the same kinds
of records in MLflow, a failure at any point ends the run FAILED, and `model-lib train` stopped with
Ctrl-C resumes in the same run."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from model_lib import checkpoints
from model_lib.prepared import channel_paths
from model_lib.sagemaker.basedir import encode_hyperparameters, lay_out
from model_lib.sagemaker.local import data_digests_env
from model_lib.sagemaker.supervise import run_toolkit
from model_lib.tracking.lineage import file_md5, input_md5
from tests.conftest import BIN, REPO, free_port, logged_datasets, logged_model, serving, write_prepared

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HPS = {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "ngram_buckets": 4099, "patience": 5}


@pytest.fixture
def workdir(tmp_path):
    """A folder laid out like the repo after `prepare`, with its own MLflow store."""
    write_prepared(tmp_path / "data" / "prepared", count=1200, max_length=40)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": HPS, "evaluate": {"threshold": 0.5}}), encoding="utf-8")
    return tmp_path


def env_for(workdir: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db", "PYTHONUNBUFFERED": "1"}


def model_lib(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "model-lib"), *args], cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=600
    )


def runs(workdir: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def kinds(workdir: Path, run) -> dict[str, set[str]]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    for folder in ("figures", "reports"):
        artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, folder)}
    per_door = {"model_lib.stage", "sagemaker.job_name", "git_commit", "git_dirty"}
    return {
        "params": set(run.data.params),
        "metrics": set(run.data.metrics),
        "tags": {t for t in run.data.tags if not t.startswith("mlflow.")} - per_door,
        "artifacts": artifacts - {"reports/prepare.json"},  # DVC's prepare report: no such file in a job
        "logged model": {logged_model(client, run.info.run_id).name},
        "datasets": {(n, d["digest"], d["rows"], d["context"]) for n, d in logged_datasets(client, run.info.run_id).items()},
    }


def sagemaker_job(workdir: Path, hps: dict) -> Path:
    base = workdir / "opt_ml"
    prepared = channel_paths(workdir / "data" / "prepared")
    lay_out(base, encode_hyperparameters(hps), prepared, REPO / "entry_point")
    # As `model-lib launch` does: the splits arrive under their objects' md5 names, their .dir md5 beside.
    run_toolkit(base, {"MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db", **data_digests_env(prepared)}, timeout=600)
    return base


def test_dvc_stage_and_sagemaker_job_log_the_same_kinds_of_records(workdir):
    import mlflow

    for stage in ("train", "evaluate"):
        result = model_lib(workdir, stage)
        assert result.returncode == 0, result.stderr[-3000:]
    sagemaker_job(workdir, HPS)
    found = runs(workdir)
    assert len(found) == 2
    by_door = {r.data.tags["model_lib.stage"]: kinds(workdir, r) for r in found}
    assert by_door["train"] == by_door["sagemaker"]
    assert {"figures/roc.png", "reports/metrics.json"} <= by_door["train"]["artifacts"]
    assert by_door["train"]["logged model"] == {"model"}
    assert {"test_accuracy", "val_loss", "train_seconds", "best_epoch"} <= by_door["train"]["metrics"]
    assert all(r.info.status == "FINISHED" for r in found)
    # The DVC stage's run page lists each input as a dataset: name, DVC md5, the repo path (no DVC remote here), rows.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (train_run,) = [r for r in found if r.data.tags["model_lib.stage"] == "train"]
    datasets = logged_datasets(client, train_run.info.run_id)
    files = channel_paths(workdir / "data" / "prepared")
    assert {n: d["digest"] for n, d in datasets.items()} == {n: input_md5(p) for n, p in files.items()}
    assert {n: d["source"] for n, d in datasets.items()} == {n: f"data/prepared/{p.name}" for n, p in files.items()}
    assert {n: d["rows"] for n, d in datasets.items()} == {"train": 900, "test": 300, "vocab": None, "embeddings": None}
    assert {n: d["context"] for n, d in datasets.items()} == {
        "train": "training", "test": "evaluation", "vocab": "training", "embeddings": "training"}  # fmt: skip
    assert {d["source_type"] for d in datasets.values()} == {"local"}
    assert train_run.data.tags["dvc_md5.train"] == datasets["train"]["digest"]  # the tags stay


def test_a_failure_after_the_run_opened_ends_it_failed_through_either_door(workdir):
    # Holding out 99.9% for validation leaves nothing to train on: an error raised inside training.
    result = model_lib(workdir, "train", "-S", "validation_split=0.999")
    assert result.returncode == 2 and "too few for validation_split=0.999" in result.stderr
    base = sagemaker_job(workdir, {**HPS, "validation_split": 0.999})
    assert "too few for validation_split=0.999" in (base / "output" / "failure").read_text()
    found = runs(workdir)
    assert sorted(r.data.tags["model_lib.stage"] for r in found) == ["sagemaker", "train"]
    assert [r.info.status for r in found] == ["FAILED", "FAILED"]


def test_model_lib_train_stopped_with_ctrl_c_resumes_in_the_same_run(workdir):
    hps = {**HPS, "epochs": 3, "checkpoint_steps": 10}
    (workdir / "params.yaml").write_text(yaml.safe_dump({"train": hps}), encoding="utf-8")
    command = [str(BIN / "model-lib"), "train"]
    first = subprocess.Popen(
        command, cwd=workdir, env=env_for(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while not checkpoints.generation_numbers(workdir / "checkpoints"):
        assert first.poll() is None, first.stdout.read()[-3000:]
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 130, output[-3000:]
    assert "training stopped by SIGINT: state saved in checkpoints; run again to resume" in output
    assert [r.info.status for r in runs(workdir)] == ["KILLED"]

    again = model_lib(workdir, "train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at epoch" in again.stderr
    (run,) = runs(workdir)
    assert run.info.status == "FINISHED" and run.data.tags["model_lib.restarts"] == "1"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1, 2]
    reference = json.loads((workdir / "models" / "mlflow_run.json").read_text())
    assert reference == {"run_id": run.info.run_id, "model_md5": file_md5(workdir / "models" / "model.keras")}
    assert checkpoints.generation_numbers(workdir / "checkpoints") == []


def test_register_model_makes_a_version_that_mlflow_models_serve_answers_on_raw_text(workdir):
    import urllib.request

    import mlflow

    for _ in range(2):  # the second train of the same params resumes nothing and registers again: version 2
        result = model_lib(workdir, "train", "--register-model", "imdb-sentiment")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "registered model imdb-sentiment version" in result.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    versions = sorted(client.search_model_versions("name = 'imdb-sentiment'"), key=lambda v: int(v.version))
    assert [int(v.version) for v in versions] == [1, 2]
    first = versions[0]
    assert first.source == f"models:/{logged_model(client, first.run_id).model_id}"
    assert {"git_commit", "dvc_md5.train", "dvc_md5.test", "dvc_md5.vocab", "dvc_md5.embeddings"} <= set(first.tags)

    port = free_port()
    command = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/imdb-sentiment/1", "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**env_for(workdir), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # it execs `uvicorn`, as an activated venv would
    with serving(command, "/ping", port, env, 180, cwd=workdir, stderr=subprocess.DEVNULL) as url:
        body = {"dataframe_split": {"columns": ["review"], "data": [["A wonderful, moving film."], ["Dull and far too long."]]}}
        request = urllib.request.Request(
            f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    probabilities = [row["probability"] for row in answer["predictions"]]
    assert len(probabilities) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)
