"""The model-lib command as a user runs it: exit codes, one-line errors, help, predict."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_LIB = [sys.executable, "-m", "model_lib.cli"]


def model_lib(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODEL_LIB, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_stage_and_predict(tmp_path):
    result = model_lib("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("ingest", "prepare", "train", "evaluate", "predict", "sagemaker-local", "launch"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "params,message",
    [
        (None, "params.yaml: params file not found"),
        ("prepare:\n  seed: 1\n", "params.yaml: missing section 'train'"),
        ("train:\n  epoch: 3\n", "params.yaml: train: unknown key 'epoch'"),
        ("train:\n  epochs: three\n", "params.yaml: train.epochs: expected an integer, got 'three'"),
        ("train:\n  batch_size: -8\n", "params.yaml: train.batch_size: expected a positive number, got -8"),
        ("train:\n  epochs: 0\n", "params.yaml: train.epochs: expected a positive number, got 0"),
    ],
)
def test_bad_params_exit_2_with_one_line_naming_key_and_value(tmp_path, params, message):
    if params is not None:
        (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    result = model_lib("train", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"model-lib train: error: {message}")
    assert not (tmp_path / "models").exists()


def test_params_option_reads_another_file(tmp_path):
    (tmp_path / "other.yaml").write_text("ingest:\n  source: nowhere.csv\n", encoding="utf-8")
    result = model_lib("ingest", "--params", "other.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere.csv: review source not found" in result.stderr
    assert not (tmp_path / "data" / "reviews.jsonl").exists()


def test_override_of_another_section_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("ingest:\n  limit: 10\n", encoding="utf-8")
    result = model_lib("ingest", "-S", "train.epochs=2", cwd=tmp_path)
    assert result.returncode == 2 and "reads only the 'ingest' section" in result.stderr


def test_ingest_writes_one_clean_file(tmp_path, tiny_reviews):
    (tmp_path / "params.yaml").write_text(f"ingest:\n  source: {tiny_reviews}\n  limit: 50\n", encoding="utf-8")
    result = model_lib("ingest", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "data" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50 and "<br" not in lines[0]
    assert "ingest: 50 reviews (25 positive)" in result.stdout


def test_predict_without_texts_is_a_usage_error(tmp_path):
    result = model_lib("predict", cwd=tmp_path)
    assert result.returncode == 2 and "give review texts" in result.stderr


def test_ngram_buckets_above_the_model_limit_fail_before_any_data_loads(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  ngram_buckets: 3000000\n", encoding="utf-8")
    result = model_lib("train", "--no-mlflow", cwd=tmp_path)  # no prepared data here: they are never read
    assert result.returncode == 2
    assert "train.ngram_buckets: expected an integer from 1 to 2128327, got 3000000" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a CLI process that imports TensorFlow
def test_seed_cnn_on_data_it_cannot_take_names_the_key_and_the_fix(tmp_path):
    from tests.conftest import write_prepared

    write_prepared(tmp_path / "data" / "prepared", max_length=40)
    (tmp_path / "params.yaml").write_text("train:\n  model: seed_cnn\n", encoding="utf-8")
    result = model_lib("train", "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.model: 'seed_cnn' needs reviews encoded to 1000 tokens" in result.stderr
    assert "have 40; set prepare.max_length: 1000" in result.stderr


@pytest.mark.slow  # a fresh process imports TensorFlow
def test_keras_loads_a_saved_model_after_import_model_lib(tmp_path, tiny_training):
    shutil.copy(tiny_training.model_file, tmp_path / "m.keras")
    # A user's own script in a fresh process: import model_lib, then Keras' own loader.
    script = """
import sys, model_lib
assert "tensorflow" not in sys.modules  # importing model_lib stays light
import keras
model = keras.models.load_model("m.keras")
print(model.predict(keras.ops.convert_to_tensor([["a wonderful film"]]), verbose=0).shape)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(1, 1)" in result.stdout


@pytest.mark.parametrize(
    "env,message",
    [
        ({"MODEL_LIB_TRAIN_ON": "cloud"}, "MODEL_LIB_TRAIN_ON='cloud': expected one of local, sagemaker"),
        (
            {"MODEL_LIB_TRAIN_ON": "sagemaker", "MODEL_LIB_LAUNCH_OPTIONS": "--spot --instance-typ ml.m5.xlarge"},
            "MODEL_LIB_LAUNCH_OPTIONS='--spot --instance-typ ml.m5.xlarge': not a `model-lib launch` option: --instance-typ",
        ),
        (
            {"MODEL_LIB_TRAIN_ON": "sagemaker", "MODEL_LIB_LAUNCH_OPTIONS": "--job-name mine"},
            "MODEL_LIB_LAUNCH_OPTIONS: --job-name is chosen by the stage",
        ),
        (  # a queued experiment's workspace lacks git-ignored files; DVC_ROOT names the repo that has them
            {"MODEL_LIB_TRAIN_ON": "sagemaker", "MODEL_LIB_LAUNCH_OPTIONS": "--terraform-outputs tf.json", "DVC_ROOT": "/no"},
            "MODEL_LIB_LAUNCH_OPTIONS: --terraform-outputs tf.json: no such file in ",
        ),
    ],
)
def test_where_train_runs_is_checked_before_anything_happens(tmp_path, env, message):
    import os

    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    result = subprocess.run(
        [*MODEL_LIB, "train"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"model-lib train: error: {message}"), lines
    assert not (tmp_path / "models").exists()


def test_launch_flags_are_the_launch_options_fields_with_their_defaults():
    from model_lib.cli import _launch_options, build_parser
    from model_lib.sagemaker.launch import LaunchOptions

    assert _launch_options(build_parser().parse_args(["launch"])) == LaunchOptions()
    given = build_parser().parse_args(
        ["launch", "--spot", "--max-run", "60", "--terraform-outputs", "t.json", "--register-model", "m"]
    )
    assert _launch_options(given) == LaunchOptions(spot=True, max_run=60, terraform_outputs=Path("t.json"), register_model="m")


def test_a_relative_terraform_outputs_is_found_in_the_repo_a_queued_experiment_came_from(tmp_path, monkeypatch):
    from model_lib.cli import _from_dvc_root

    repo, workspace = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    workspace.mkdir(parents=True)
    (repo / "tf-outputs.json").write_text("{}")
    monkeypatch.chdir(workspace)
    found = _from_dvc_root(Path("tf-outputs.json"), "--terraform-outputs", {"DVC_ROOT": str(repo)})
    assert found == repo / "tf-outputs.json"
    (workspace / "tf-outputs.json").write_text("{}")  # one here wins: a run in the repo itself
    assert _from_dvc_root(Path("tf-outputs.json"), "--terraform-outputs", {"DVC_ROOT": str(repo)}) == Path("tf-outputs.json")
