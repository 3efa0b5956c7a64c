"""The bound of an artifact upload and the check that the server holds it whole (no server: the
listing is given as MLflow's FileInfo entries)."""

import os

import pytest

from model_lib.errors import ConfigError
from model_lib.tracking import records
from model_lib.tracking.tracker import not_uploaded
from model_lib.tracking.uploads import (
    UPLOAD_RATE_ENV,
    IncompleteUpload,
    check_whole,
    local_files,
    timeout_for,
    upload_bound,
    upload_timeout,
)


class Info:
    def __init__(self, path, file_size):
        self.path, self.file_size = path, file_size


def test_upload_timeout_is_the_base_plus_the_time_at_the_minimum_rate_rounded_up():
    assert upload_timeout(150_000_000, 10, 1e6) == 160
    assert upload_timeout(1, 10, 1e6) == 11
    assert upload_timeout(0, 0, 1e6) == 1


def test_the_timeout_of_a_folder_is_that_of_its_largest_file(tmp_path, monkeypatch):
    (tmp_path / "model" / "variables").mkdir(parents=True)
    (tmp_path / "model" / "MLmodel").write_bytes(b"x" * 10)
    (tmp_path / "model" / "variables" / "data").write_bytes(b"x" * 3_000_000)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setenv(UPLOAD_RATE_ENV, "0.5")
    assert timeout_for([tmp_path / "model"]) == 16
    assert local_files([tmp_path / "model"]) == [("MLmodel", 10), ("variables/data", 3_000_000)]


def test_mlflows_own_upload_timeout_wins_when_the_user_set_it(tmp_path, monkeypatch):
    (tmp_path / "big").write_bytes(b"x" * 5_000_000)
    monkeypatch.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", "7")
    assert timeout_for([tmp_path / "big"]) == 7


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan"])
def test_a_minimum_rate_that_is_not_a_positive_number_is_refused_by_name(tmp_path, monkeypatch, value):
    monkeypatch.delenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setenv(UPLOAD_RATE_ENV, value)
    with pytest.raises(ConfigError, match=f"{UPLOAD_RATE_ENV}: expected a number of MB per second > 0, got '{value}'"):
        timeout_for([tmp_path])


def test_the_upload_bound_is_set_only_while_the_upload_runs(tmp_path, monkeypatch):
    (tmp_path / "big").write_bytes(b"x" * 2_000_000)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.delenv(UPLOAD_RATE_ENV, raising=False)
    with upload_bound([tmp_path / "big"]) as seconds:
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(seconds) == "12"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"


def test_a_file_the_server_holds_shorter_or_not_at_all_is_an_incomplete_upload():
    listing = {None: [Info("MLmodel", 10)], "variables": [Info("variables/data", 100)]}
    check_whole([("MLmodel", 10), ("variables/data", 100)], listing.__getitem__, "model m-1")
    with pytest.raises(IncompleteUpload, match="model m-1: variables/data: the server holds 100 bytes, the local file is 300"):
        check_whole([("variables/data", 300)], listing.__getitem__, "model m-1")
    with pytest.raises(IncompleteUpload, match="model m-1: other: the server holds nothing"):
        check_whole([("other", 1)], listing.__getitem__, "model m-1")


def test_a_server_that_gives_no_sizes_is_taken_at_its_word():
    check_whole([("MLmodel", 10)], lambda folder: [Info("MLmodel", None)], "model m-1")


def test_the_files_waiting_to_be_uploaded_are_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    waiting = [
        records.Epoch(0, {"loss": 1.0}),
        records.Artifacts([str(tmp_path / "a.png"), str(tmp_path / "gone.png")], "figures"),
        records.Model(str(tmp_path / "model.keras"), ["good"]),
    ]
    assert not_uploaded(waiting) == [str(tmp_path / "a.png"), f"the model {tmp_path / 'model.keras'}"]
