"""The run's inputs as MLflow datasets: names, DVC digests, sources (remote object or path), rows."""

import json
import shutil
from pathlib import Path

import pytest

from model_lib.errors import DataError
from model_lib.tracking import records
from model_lib.tracking.datasets import (
    DataOrigin,
    default_remote_url,
    describe_inputs,
    object_uri,
    remote_of_object,
)
from model_lib.tracking.lineage import dir_entries, dir_md5, file_md5, input_md5
from tests.conftest import write_prepared


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working folder like the repo after `prepare`, with a DVC config naming a local default remote."""
    write_prepared(tmp_path / "data" / "prepared", count=40)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    analytics = false\n    remote = local\n['remote \"local\"']\n    url = ../../dvc-remote\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(repo: Path) -> dict[str, Path]:
    return {name: repo / "data" / "prepared" / f for name, f in
            (("train", "train"), ("test", "test"), ("vocab", "vocab.txt"), ("embeddings", "embeddings.npy"))}  # fmt: skip


def push(path: Path, remote: Path) -> None:
    """Put ``path`` (a file, or a folder: its files and its .dir listing) in the local DVC remote
    ``remote`` where `dvc push` puts them."""
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        target = Path(object_uri(str(remote), file_md5(file)))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    if path.is_dir():
        listing = Path(object_uri(str(remote), dir_md5(path)))
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(dir_entries(path)))


def test_each_input_is_named_with_its_md5_rows_and_context(repo):
    found = {d.name: d for d in describe_inputs(files(repo), DataOrigin.from_dvc_config())}
    assert set(found) == {"train", "test", "vocab", "embeddings"}
    assert {d.digest for d in found.values()} == {input_md5(p) for p in files(repo).values()}
    assert (found["train"].rows, found["test"].rows, found["vocab"].rows) == (30, 10, None)
    assert {n: d.context for n, d in found.items()} == {
        "train": "training", "test": "evaluation", "vocab": "training", "embeddings": "training"}  # fmt: skip


def test_a_file_not_in_the_remote_is_shown_by_its_repo_relative_path(repo):
    (found,) = describe_inputs({"vocab": files(repo)["vocab"]}, DataOrigin.from_dvc_config())
    assert found.source == "data/prepared/vocab.txt"


def test_a_file_pushed_to_the_default_remote_is_shown_as_its_object(repo):
    remote = (repo / ".." / "dvc-remote").resolve()
    push(files(repo)["train"], remote)
    found = {d.name: d.source for d in describe_inputs(files(repo), DataOrigin.from_dvc_config())}
    md5 = dir_md5(files(repo)["train"])
    assert found["train"] == f"{remote}/files/md5/{md5[:2]}/{md5[2:]}"
    assert found["test"] == "data/prepared/test"  # not pushed


def test_config_local_overrides_the_default_remote(repo):
    (repo / ".dvc" / "config.local").write_text("['remote \"s3\"']\n    url = s3://bucket/dvc\n[core]\n    remote = s3\n")
    assert default_remote_url(repo) == "s3://bucket/dvc"


def test_no_dvc_config_means_no_remote(tmp_path):
    assert default_remote_url(tmp_path) is None


def test_a_job_shows_its_channels_as_the_remote_objects_they_came_from(repo):
    origin = DataOrigin("s3://bucket/dvc", known_present=True)  # no S3 call: the channel was downloaded from it
    (found,) = describe_inputs({"embeddings": files(repo)["embeddings"]}, origin)
    md5 = file_md5(files(repo)["embeddings"])
    assert found.source == f"s3://bucket/dvc/files/md5/{md5[:2]}/{md5[2:]}"
    assert remote_of_object(found.source) == "s3://bucket/dvc"
    assert remote_of_object("s3://bucket/data/train.npz") is None


def test_evaluate_marks_every_input_evaluation(repo):
    found = describe_inputs({"test": files(repo)["test"], "vocab": files(repo)["vocab"]}, context="evaluation")
    assert {d.context for d in found} == {"evaluation"}


def test_a_dataset_record_survives_the_pending_file():
    record = records.Dataset("train", "0" * 32, "data/prepared/train.npz", "training", rows=30)
    assert records.parse(record.to_dict()) == record
    with pytest.raises(DataError, match="'dataset' record: rows: expected an integer or null"):
        records.parse({**record.to_dict(), "rows": "30"})


def test_sagemaker_local_names_the_default_remote_only_when_it_holds_every_channel(repo):
    from model_lib.sagemaker.local import data_remote_env

    remote = (repo / ".." / "dvc-remote").resolve()
    for name in ("train", "test", "vocab"):
        push(files(repo)[name], remote)
    assert data_remote_env(files(repo), repo) == {}  # embeddings not pushed: the job shows paths
    push(files(repo)["embeddings"], remote)
    assert data_remote_env(files(repo), repo) == {"MODEL_LIB_DATA_REMOTE": str(remote)}
