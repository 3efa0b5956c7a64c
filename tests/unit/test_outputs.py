"""Outputs that cannot be written (a folder that is a file, a file that is a folder) are refused
with one line naming the path, before anything is read or trained (the processes with real faults:
tests/integration/test_outputs.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from model_lib.cli import main
from tests.conftest import TINY_TRAINING, TinyTraining, glove_text, review_rows


@pytest.fixture
def stage_folder(tmp_path, monkeypatch):
    """A working folder with the ingest output, its source and a 3-d GloVe file, params for every stage."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "data").mkdir()
    text = "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in review_rows(40))
    (tmp_path / "source.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "data" / "reviews.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "glove.6B.3d.txt").write_text(glove_text(), encoding="utf-8")
    params = {
        "ingest": {"source": str(tmp_path / "source.jsonl")},
        "prepare": {"glove": str(tmp_path / "glove.6B.3d.txt"), "embedding_dim": 3, "min_count": 1, "max_length": 20},
        "train": TINY_TRAINING,
        "evaluate": {"threshold": 0.5},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return tmp_path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_prepare_into_a_folder_that_is_a_file_exits_2_naming_it(stage_folder, capsys):
    (stage_folder / "data" / "prepared").write_text("not a folder")
    assert main(["prepare"]) == 2
    assert one_error_line(capsys) == (
        "model-lib prepare: error: data/prepared: expected a folder to write the prepared files in, got a file"
    )


def test_ingest_onto_a_folder_exits_2_naming_it(stage_folder, capsys):
    (stage_folder / "data" / "reviews.jsonl").unlink()
    (stage_folder / "data" / "reviews.jsonl").mkdir()
    assert main(["ingest"]) == 2
    assert one_error_line(capsys) == "model-lib ingest: error: data/reviews.jsonl: expected a file, got a folder"


def test_evaluate_with_reports_a_file_exits_2_naming_it(stage_folder, capsys, tiny_training: TinyTraining):
    shutil.copytree(tiny_training.model_file.parent / "prepared", stage_folder / "data" / "prepared")
    (stage_folder / "models").mkdir()
    shutil.copy(tiny_training.model_file, stage_folder / "models" / "model.keras")
    (stage_folder / "reports").write_text("a file where the reports folder goes")
    assert main(["evaluate", "--no-mlflow"]) == 2
    assert one_error_line(capsys) == "model-lib evaluate: error: reports: expected a folder to write the reports in, got a file"


def test_train_with_models_a_file_exits_2_before_any_run_opens(stage_folder, capsys, tiny_prepared):
    shutil.copytree(tiny_prepared["train"].parent, stage_folder / "data" / "prepared")
    (stage_folder / "models").write_text("a file where the models folder goes")
    assert main(["train", "-S", "epochs=1"]) == 2
    assert one_error_line(capsys) == "model-lib train: error: models: expected a folder to write the model in, got a file"
    assert not (stage_folder / "mlflow.db").exists() and not (stage_folder / "checkpoints").exists()


def test_train_with_the_model_file_a_folder_exits_2_before_any_run_opens(stage_folder, capsys, tiny_prepared):
    shutil.copytree(tiny_prepared["train"].parent, stage_folder / "data" / "prepared")
    (stage_folder / "models" / "model.keras").mkdir(parents=True)
    assert main(["train", "-S", "epochs=1"]) == 2
    assert one_error_line(capsys) == "model-lib train: error: models/model.keras: expected a file, got a folder"
    assert not (stage_folder / "mlflow.db").exists()


def test_the_saved_model_gets_the_mode_a_plain_open_gets(tiny_training: TinyTraining):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    assert oct(tiny_training.model_file.stat().st_mode & 0o777) == oct(0o666 & ~umask)


def test_train_on_sagemaker_with_models_a_file_exits_2_before_anything_is_pushed(stage_folder, capsys, monkeypatch):
    monkeypatch.setenv("MODEL_LIB_TRAIN_ON", "sagemaker")
    (stage_folder / "models").write_text("a file where the models folder goes")
    assert main(["train"]) == 2
    assert one_error_line(capsys) == "model-lib train: error: models: expected a folder to write the model in, got a file"


def test_a_file_tracking_store_under_a_file_is_refused_naming_it(tmp_path):
    from model_lib.errors import OutputError
    from model_lib.tracking.uris import check_tracking_store

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError) as raised:
        check_tracking_store(f"file://{tmp_path}/taken/mlruns")
    uri = f"file://{tmp_path}/taken/mlruns"
    expected = f"MLFLOW_TRACKING_URI={uri}: {tmp_path}/taken: expected a folder to write the tracking store in, got a file"
    assert str(raised.value) == expected


def test_a_sqlite_tracking_store_that_is_a_folder_is_refused_naming_it(tmp_path):
    from model_lib.errors import OutputError
    from model_lib.tracking.uris import check_tracking_store

    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(
        OutputError,
        match=f"^MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db: {tmp_path}/mlflow.db: expected a file, got a folder$",
    ):
        check_tracking_store(f"sqlite:///{tmp_path}/mlflow.db")
