"""The main job: real `dvc repro` in a temporary copy of the repo, on a small subset, with MLflow."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, git_copy_of_repo, logged_datasets, logged_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}, "train": {"epochs": 1, "ngram_buckets": 4096}}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A git copy of the repo (tracked and new files), params shrunk, after one `dvc repro`."""
    copy = tmp_path_factory.mktemp("repo")
    env = git_copy_of_repo(copy, SMALL)
    # Python reports every import it makes: each stage's section of the output names the modules it ran.
    profiled = {**env, "PYTHONPROFILEIMPORTTIME": "1", "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(["dvc", "repro"], cwd=copy, env=profiled, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.returncode == 0, first.stdout[-5000:]
    shutil.copytree(copy, copy.parent / "after-first-repro", symlinks=True)
    return copy, env, first


IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(model_lib(?:\.\w+)*)\s*$")
# Modules that parse flags, word errors, mask credentials in what is printed or export names: a change
# to them cannot change an output. (The CLI builds every command's flags, `launch`'s from
# sagemaker/options.py and `deploy`'s from sagemaker/deploy_options.py, for every stage, and installs
# redaction.py's masking.)
NOT_OUTPUT_CODE = {
    "model_lib/__init__.py",
    "model_lib/cli.py",
    "model_lib/errors.py",
    "model_lib/redaction.py",
    "model_lib/sagemaker/__init__.py",
    "model_lib/sagemaker/options.py",
    "model_lib/sagemaker/deploy_options.py",
}


def modules_each_stage_ran(output: str) -> dict[str, set[str]]:
    """Return {stage: model_lib source files it imported}, from `dvc repro` run with PYTHONPROFILEIMPORTTIME."""
    ran: dict[str, set[str]] = {}
    stage = None
    for line in output.split("\n"):
        started = re.match(r"^Running stage '(\w+)'", line)
        if started:
            stage = started.group(1)
            ran[stage] = set()
        found = IMPORT_LINE.match(line)
        if found and stage is not None:
            path = Path(*found.group(1).split("."))
            ran[stage].add(str(path / "__init__.py") if (REPO / path).is_dir() else f"{path}.py")
    return ran


def code_deps(copy: Path) -> dict[str, set[str]]:
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    return {name: {d for d in stage.get("deps", []) if d.startswith("model_lib/")} for name, stage in stages.items()}


def test_each_stage_depends_on_every_module_it_runs(pipeline_repo):
    copy, _, first = pipeline_repo
    ran = modules_each_stage_ran(first.stdout)
    assert set(ran) == {"ingest", "prepare", "train", "evaluate"}
    assert "model_lib/pipeline.py" in ran["ingest"] and "model_lib/training.py" in ran["train"]
    deps = code_deps(copy)
    for stage, modules in ran.items():
        assert modules - NOT_OUTPUT_CODE <= deps[stage], (
            f"{stage}: missing deps {sorted(modules - NOT_OUTPUT_CODE - deps[stage])}"
        )
        # And no more: a listed module the stage never runs (the SageMaker follower under a local
        # train, say) would rerun the stage for nothing when it is edited.
        assert deps[stage] <= modules, f"{stage}: deps it never runs {sorted(deps[stage] - modules)}"
    assert "model_lib/training.py" not in ran["prepare"]  # preparing data never imports the training loop
    assert not any(NOT_OUTPUT_CODE & found for found in deps.values())  # editing --help text retrains nothing


def test_editing_a_module_invalidates_every_stage_that_runs_it(pipeline_repo):
    copy, env, first = pipeline_repo
    edited = copy.parent / "after-first-repro"
    ran = modules_each_stage_ran(first.stdout)
    for module in set().union(*ran.values()):
        with (edited / module).open("a", encoding="utf-8") as handle:
            handle.write("\n# edited\n")
    status = json.loads(run(["dvc", "status", "--json"], edited, env).stdout)
    for stage, modules in ran.items():
        changed = {path for entry in status.get(stage, []) for path in entry.get("changed deps", {})}
        assert modules - NOT_OUTPUT_CODE <= changed, f"{stage}: {sorted(modules - NOT_OUTPUT_CODE - changed)} not seen as changed"


def test_repro_writes_every_declared_output(pipeline_repo):
    copy, _, _ = pipeline_repo
    for path in (
        "data/reviews.jsonl",
        "data/prepared/train",
        "data/prepared/test",
        "data/prepared/vocab.txt",
        "data/prepared/embeddings.npy",
        "models/model.keras",
        "reports/metrics.json",
        "reports/roc.png",
        "reports/confusion_matrix.png",
        "reports/training_curves.png",
        "reports/history.csv",
    ):
        assert (copy / path).is_file() or (copy / path / "part-00000.npz").is_file(), path
    assert len((copy / "data/reviews.jsonl").read_text(encoding="utf-8").split("\n")) == 401  # never splitlines(): U+2028


def test_dvc_metrics_show_reports_test_accuracy(pipeline_repo):
    copy, env, _ = pipeline_repo
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], copy, env).stdout)
    metrics = shown[""]["data"]["reports/metrics.json"]["data"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n"] == 80
    assert "predict_seconds" not in metrics  # a timing changes every run: MLflow has it
    prepared = shown[""]["data"]["data/prepared/prepare.json"]["data"]
    assert prepared["train_reviews"] == 320 and prepared["glove_coverage"] > 0.9


def test_dvc_plots_render_to_json(pipeline_repo):
    copy, env, _ = pipeline_repo
    plots = json.loads(run(["dvc", "plots", "show", "--json"], copy, env).stdout)
    assert {"Training curves", "ROC", "Confusion matrix"} <= set(plots["data"])


def test_mlflow_run_holds_params_epoch_metrics_lineage_and_a_working_model(pipeline_repo):
    import mlflow

    copy, env, _ = pipeline_repo
    reference = json.loads((copy / "models/mlflow_run.json").read_text())
    assert set(reference) == {"run_id", "model_md5"}  # no machine path, no server address
    run(["git", "check-ignore", "-q", "models/mlflow_run.json"], copy, env)  # a run of this clone's store only
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{copy}/mlflow.db")
    run_info = client.get_run(reference["run_id"])
    assert run_info.data.params["model"] == "ngram_glove" and run_info.data.params["epochs"] == "1"
    assert run_info.data.params["evaluate.threshold"] == "0.5"
    assert len(client.get_metric_history(reference["run_id"], "val_loss")) == 1
    assert {"test_accuracy", "test_roc_auc", "test_predict_seconds", "train_seconds"} <= set(run_info.data.metrics)
    assert "system/cpu_utilization_percentage" in run_info.data.metrics  # on by default (the local sqlite store too)
    tags = run_info.data.tags
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    model_out = next(out for out in lock["stages"]["train"]["outs"] if out["path"] == "models/model.keras")
    assert tags["model_md5"] == model_out["md5"] == reference["model_md5"]  # dvc.lock's model -> its run
    # The copy is committed: the files DVC deletes and rewrites while it runs do not make it dirty.
    assert len(tags["git_commit"]) == 40 and tags["git_dirty"] == "false"
    assert set(tags) >= {"dvc_md5.train", "dvc_md5.test", "dvc_md5.vocab", "dvc_md5.embeddings"}
    # The run page's "Datasets": each input with the md5 dvc.lock records for it (train and evaluate add to one run).
    outs = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    locked = {Path(out["path"]).stem: out["md5"] for out in outs if out["path"] != "data/prepared/prepare.json"}
    datasets = logged_datasets(client, reference["run_id"])
    assert {n: d["digest"] for n, d in datasets.items()} == locked
    assert datasets["test"]["context"] == "evaluation" and datasets["train"]["source"] == "data/prepared/train"
    model = logged_model(client, reference["run_id"])  # a first-class MLflow 3 logged model
    assert model.source_run_id == reference["run_id"] and model.experiment_id == run_info.info.experiment_id
    experiment = client.get_experiment(run_info.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view
    mlflow.set_tracking_uri(f"sqlite:///{copy}/mlflow.db")
    try:
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}"))
    finally:  # process-wide: a later test of this worker would track here
        mlflow.set_tracking_uri(None)
    assert "tensorflow" in (folder / "requirements.txt").read_text()  # what serving the exported model needs
    assert "python_function" in (folder / "MLmodel").read_text()
    assert not list(folder.rglob("*.pkl"))  # a model from code and a SavedModel, no pickle
    figures = {f.path for f in client.list_artifacts(reference["run_id"], "figures")}
    assert figures == {"figures/roc.png", "figures/confusion_matrix.png", "figures/training_curves.png"}


def test_mlflow_model_predicts_in_a_process_that_never_imports_model_lib(pipeline_repo):
    copy, env, _ = pipeline_repo
    import mlflow

    run_id = json.loads((copy / "models/mlflow_run.json").read_text())["run_id"]
    model_id = logged_model(mlflow.MlflowClient(tracking_uri=f"sqlite:///{copy}/mlflow.db"), run_id).model_id
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri('sqlite:///{copy}/mlflow.db')\n"
        f"model = mlflow.pyfunc.load_model('models:/{model_id}')\n"
        "out = model.predict(pd.DataFrame({'review': ['A wonderful film.', 'A boring film.', 'Meh.']}))\n"
        "assert 'model_lib' not in sys.modules\n"
        "print(' '.join(f'{p:.6f}' for p in __import__('numpy').asarray(out).reshape(-1)))\n"
    )
    result = run([sys.executable, "-c", script], copy, env)
    probabilities = [float(p) for p in result.stdout.split()]
    assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)


def test_second_repro_changes_nothing(pipeline_repo):
    copy, env, first = pipeline_repo
    assert "Running stage 'train'" in first.stdout
    again = run(["dvc", "repro"], copy, env)
    assert "Running stage" not in again.stdout
    status = run(["dvc", "status"], copy, env)
    assert "Data and pipelines are up to date" in status.stdout


def output_md5s(copy: Path) -> dict[str, str]:
    """Return {path: md5} of every stage output dvc.lock records."""
    stages = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def test_a_forced_rerun_of_the_same_inputs_changes_no_output_and_no_tracked_file(pipeline_repo):
    copy, env, _ = pipeline_repo
    history = json.loads((copy / "models/history.json").read_text())
    assert not {"run_id", "train_seconds"} & set(history)  # they differ every run: MLflow has them
    assert json.loads((copy / "models/cost.json").read_text()) == {"cost_usd": 0.0, "spot_saving_usd": 0.0, "trained_on": "local"}
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "the first repro's outputs"], copy, env)
    lock, model, md5s = (copy / "dvc.lock").read_bytes(), (copy / "models/model.keras").read_bytes(), output_md5s(copy)
    run(["dvc", "repro", "-f"], copy, env)
    assert output_md5s(copy) == md5s
    assert (copy / "dvc.lock").read_bytes() == lock
    assert (copy / "models/model.keras").read_bytes() == model
    assert run(["git", "status", "--porcelain"], copy, env).stdout == ""
    assert json.loads(run(["dvc", "metrics", "diff", "--json"], copy, env).stdout) == {}


def test_outputs_push_to_the_local_remote(pipeline_repo):
    copy, env, _ = pipeline_repo
    run(["dvc", "push"], copy, env)
    assert any((copy / "dvc-remote").rglob("*"))


def test_exp_run_with_a_changed_param(pipeline_repo):
    copy, env, _ = pipeline_repo
    run(["dvc", "exp", "run", "-S", "train.epochs=2"], copy, env)
    history = json.loads((copy / "models/history.json").read_text())
    assert history["hyperparameters"]["epochs"] == 2
    diff = run(["dvc", "params", "diff", "--json"], copy, env).stdout
    assert '"train.epochs"' in diff


def test_predict_prints_label_and_probability_per_review(pipeline_repo):
    copy, env, _ = pipeline_repo
    (copy / "reviews.txt").write_text("A wonderful, moving film.\n\nDull and far too long.\n", encoding="utf-8")
    result = run(["model-lib", "predict", "Great acting.", "--file", "reviews.txt"], copy, env)
    lines = result.stdout.strip().split("\n")
    assert len(lines) == 3  # one argument + two non-empty lines of the file
    for line, text in zip(lines, ["Great acting.", "A wonderful, moving film.", "Dull and far too long."]):
        label, probability, shown = line.split("\t")
        assert label in ("positive", "negative") and 0.0 <= float(probability) <= 1.0 and shown == text
        assert (label == "positive") == (float(probability) >= 0.5)
