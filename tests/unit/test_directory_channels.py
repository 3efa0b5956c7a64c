"""Channels that are DVC directory outputs, without servers: the digest (DVC's .dir md5), the
ManifestFile, the job side's view of the channel folder, local layouts and datasets
(against moto and the real DVC: tests/integration/test_directory_channels.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from model_lib.errors import SageMakerEnvironmentError
from model_lib.prepared import save_split
from model_lib.sagemaker import channels
from model_lib.sagemaker.basedir import channel_dir, lay_out
from model_lib.sagemaker.environment import SageMakerEnvironment
from model_lib.tracking.datasets import DataOrigin, describe_inputs, object_uri
from model_lib.tracking.lineage import dir_entries, dir_md5, file_md5, lineage_tags
from tests.conftest import REPO, sagemaker_env

REMOTE_OBJECT = "s3://bucket/dvc/files/md5/83/26479fc2f097340b4687d6e0a9472b.dir"


def folder_of(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "split"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_folder_digest_is_the_dir_md5_dvc_records(tmp_path):
    # `dvc add` of this folder (DVC 3.67) records 8326479fc2f097340b4687d6e0a9472b.dir.
    folder = folder_of(tmp_path, {"x": b"a\n", "sub/y": b"b\n"})
    assert dir_md5(folder) == "8326479fc2f097340b4687d6e0a9472b.dir"
    assert [entry["relpath"] for entry in dir_entries(folder)] == ["sub/y", "x"]


def test_the_manifest_lists_the_objects_under_the_remotes_files_prefix():
    members = ("3b5d5c3712955042212316173ccf37be", "60b725f10c9c85c70d97880dfe8191b3")
    body = json.loads(channels.manifest_body(REMOTE_OBJECT, members))
    assert body == [
        {"prefix": "s3://bucket/dvc/files/md5/"},
        "3b/5d5c3712955042212316173ccf37be",
        "60/b725f10c9c85c70d97880dfe8191b3",
    ]
    uri = channels.manifest_uri("jobs", REMOTE_OBJECT, members)
    assert uri.startswith("s3://jobs/manifests/8326479fc2f097340b4687d6e0a9472b.dir/") and uri.endswith(".manifest")
    assert channels.manifest_uri("jobs", REMOTE_OBJECT, members) == uri  # content-addressed: the same again
    assert channels.manifest_uri("jobs", REMOTE_OBJECT.replace("s3://bucket/", "s3://other/"), members) != uri


def test_a_malformed_manifest_is_refused_by_where_it_is():
    with pytest.raises(SageMakerEnvironmentError, match="s3://b/m.manifest: not a manifest"):
        channels.read_manifest(b'["no prefix"]', "s3://b/m.manifest")


def test_every_channel_is_fully_replicated_for_now():
    assert {channels.channel_distribution(name, count) for name in ("train", "test") for count in (1, 2)} == {"FullyReplicated"}


def test_a_directory_channel_lists_every_file_recursively_sorted_without_hidden_ones(tmp_path):
    folder = folder_of(tmp_path, {"ff/0a": b"1", "0b/9c": b"2", ".hidden": b"3", ".tmp/ab": b"4", "top": b"5"})
    env = SageMakerEnvironment.from_env(sagemaker_env(tmp_path, {"train": folder}))
    assert env.channel("train").files == [folder / "0b" / "9c", folder / "ff" / "0a", folder / "top"]


@pytest.mark.parametrize(
    "channel,files,digests,expected",
    [
        ("vocab", {"4f1c2a9e": b"x"}, {}, "4f1c2a9e"),  # a one-file channel: the file, as ever
        ("train", {"4f1c2a9e": b"x"}, {}, "."),  # a split is a folder of parts by the channel contract
        ("train", {"ab/cd": b"1", "ef/01": b"2"}, {}, "."),  # objects where a ManifestFile puts them
        ("vocab", {"4f1c2a9e": b"x"}, {"vocab": "0123.dir"}, "."),  # the launcher says it is a directory
    ],
)
def test_training_gets_a_directory_channels_folder_and_a_file_channels_file(tmp_path, channel, files, digests, expected):
    folder = folder_of(tmp_path, files)
    env_vars = sagemaker_env(tmp_path, {channel: folder})
    if digests:
        env_vars["MODEL_LIB_DATA_DIGESTS"] = json.dumps(digests)
    env = SageMakerEnvironment.from_env(env_vars)
    assert env.channel_input(channel) == (folder / expected if expected != "." else folder)
    assert env.data_digests == digests


def test_files_side_by_side_are_a_crowded_one_file_channel_unless_the_launcher_names_a_directory(tmp_path):
    folder = folder_of(tmp_path, {"a": b"1", "b": b"2"})
    env = SageMakerEnvironment.from_env(sagemaker_env(tmp_path, {"vocab": folder}))
    with pytest.raises(SageMakerEnvironmentError, match="holds 2 files .*MODEL_LIB_DATA_DIGESTS"):
        env.channel_input("vocab")


def test_malformed_data_digests_are_named(tmp_path):
    with pytest.raises(SageMakerEnvironmentError, match="MODEL_LIB_DATA_DIGESTS: expected"):
        SageMakerEnvironment.from_env({**sagemaker_env(tmp_path), "MODEL_LIB_DATA_DIGESTS": '["train"]'})


def test_a_local_job_gets_a_folder_as_its_objects_under_their_md5_names(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("the\nfilm\n")
    folder = folder_of(tmp_path, {"part-0": b"one", "deep/part-1": b"two", "part-2": b"two"})
    base = tmp_path / "base"
    lay_out(base, {}, {"train": folder, "vocab": vocab}, REPO / "entry_point")
    laid_out = sorted(
        p.relative_to(channel_dir(base, "train")).as_posix() for p in channel_dir(base, "train").rglob("*") if p.is_file()
    )
    md5s = sorted({file_md5(p) for p in folder.rglob("*") if p.is_file()})  # two files of the same bytes: one object
    assert laid_out == [f"{md5[:2]}/{md5[2:]}" for md5 in md5s]
    assert [p.name for p in channel_dir(base, "vocab").iterdir()] == ["vocab.txt"]


def test_a_folder_input_is_described_and_tagged_by_its_dir_md5(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shards = tmp_path / "train"
    save_split(shards, np.full((8, 4), 2), np.arange(8) % 2, shard_reviews=3)  # 3 parts (no vocabulary: no TensorFlow)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("the\nfilm\n")
    inputs = {"train": shards, "vocab": vocab}
    (train, _) = describe_inputs(inputs, DataOrigin())
    assert train.digest == dir_md5(shards) and train.source == "train" and train.rows == 8
    assert lineage_tags(inputs)["dvc_md5.train"] == dir_md5(shards)

    # In a job the files are md5-named: the launcher's digest wins, and names the .dir object in the remote.
    origin = DataOrigin("s3://bucket/dvc", known_present=True, digests={"train": "0123456789abcdef0123456789abcdef.dir"})
    (train, _) = describe_inputs(inputs, origin)
    assert train.digest == "0123456789abcdef0123456789abcdef.dir"
    assert (
        train.source
        == object_uri("s3://bucket/dvc", train.digest)
        == "s3://bucket/dvc/files/md5/01/23456789abcdef0123456789abcdef.dir"
    )
    assert lineage_tags(inputs, digests=origin.digests)["dvc_md5.train"] == train.digest


def test_sagemaker_local_names_the_remote_only_when_it_holds_a_folders_dir_and_every_file(tmp_path):
    from model_lib.sagemaker.local import data_digests_env, data_remote_env

    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = local\n['remote \"local\"']\n    url = ../remote\n")
    folder = folder_of(tmp_path, {"part-0": b"one", "part-1": b"two"})
    remote = tmp_path / "remote"

    def push(md5: str, data: bytes) -> None:
        target = Path(object_uri(str(remote), md5))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    for path in folder.iterdir():
        push(file_md5(path), path.read_bytes())
    assert data_digests_env({"train": folder}) == {"MODEL_LIB_DATA_DIGESTS": json.dumps({"train": dir_md5(folder)})}
    assert data_remote_env({"train": folder}, tmp_path) == {}  # the .dir not pushed
    push(dir_md5(folder), json.dumps(dir_entries(folder), sort_keys=True).encode())
    assert data_remote_env({"train": folder}, tmp_path) == {"MODEL_LIB_DATA_REMOTE": str(remote)}
