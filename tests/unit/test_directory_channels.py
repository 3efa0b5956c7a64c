"""Channels that are DVC directory outputs, without servers: the digest (DVC's .dir md5), the
ManifestFile, the job side's view of the channel folder, local layouts and datasets
(against moto and the real DVC: tests/integration/test_directory_channels.py)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from model_lib.errors import SageMakerEnvironmentError
from model_lib.prepared import save_split
from model_lib.sagemaker import channels
from model_lib.sagemaker.basedir import channel_dir, lay_out
from model_lib.sagemaker.environment import SageMakerEnvironment
from model_lib.sagemaker.s3sync import download_manifest, download_prefix
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


@pytest.mark.parametrize("instances,objects", [(2, 2), (2, 3), (3, 7), (20, 20)])
def test_train_is_sharded_on_several_instances_with_an_object_for_each(instances, objects):
    assert channels.channel_distribution("train", instances, objects) == "ShardedByS3Key"


@pytest.mark.parametrize("instances,objects", [(1, 1), (1, 5), (2, 1), (3, 2)])
def test_train_is_replicated_on_one_instance_or_with_fewer_objects_than_instances(instances, objects):
    assert channels.channel_distribution("train", instances, objects) == "FullyReplicated"


@pytest.mark.parametrize("name", ["test", "vocab", "embeddings"])
def test_the_other_channels_are_never_sharded(name):
    assert {channels.channel_distribution(name, count, 5) for count in (1, 2, 5)} == {"FullyReplicated"}


def test_host_shares_are_disjoint_complete_and_dealt_from_sorted_keys():
    keys = [f"{i:02x}/object" for i in range(7)][::-1]  # given out of order
    shares = [channels.host_share(keys, host, 3) for host in range(3)]
    assert shares == [["00/object", "03/object", "06/object"], ["01/object", "04/object"], ["02/object", "05/object"]]
    assert [channels.host_share(reversed(keys), host, 3) for host in range(3)] == shares  # order given: no matter
    assert channels.host_share(keys, 0, 1) == sorted(keys)


class ListingS3:
    """The few S3 calls the download helpers make, over ``objects`` (key -> bytes) of one bucket."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_paginator(self, _operation):
        return self

    def paginate(self, Bucket, Prefix):  # boto3's keyword names
        return [{"Contents": [{"Key": key} for key in sorted(self.objects) if key.startswith(Prefix)]}]

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[Key])}

    def download_file(self, bucket, key, target):
        Path(target).write_bytes(self.objects[key])


@pytest.mark.parametrize("kind", ["S3Prefix", "ManifestFile"])
def test_a_sharded_download_fetches_only_the_hosts_share(tmp_path, kind):
    parts = {f"data/files/md5/{i}a/b": b"part %d" % i for i in range(5)}
    manifest = json.dumps([{"prefix": "s3://b/data/files/md5/"}, *(key.removeprefix("data/files/md5/") for key in parts)])
    s3 = ListingS3({**parts, "manifests/m.manifest": manifest.encode()})
    got = []
    for host in range(2):
        folder = tmp_path / str(host)
        if kind == "S3Prefix":
            count = download_prefix(s3, "s3://b/data/files/md5/", folder, share=(host, 2))
        else:
            count = download_manifest(s3, "s3://b/manifests/m.manifest", folder, share=(host, 2))
        got.append({p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()})
        assert count == len(got[-1])
    assert got == [{"0a/b", "2a/b", "4a/b"}, {"1a/b", "3a/b"}]


def test_two_local_hosts_get_disjoint_shares_of_a_sharded_folder_and_every_host_the_test_split(tmp_path):
    train = folder_of(tmp_path, {"part-0": b"one", "part-1": b"two", "deep/part-2": b"three"})
    test = tmp_path / "test"
    test.mkdir()
    (test / "part-0").write_bytes(b"four")
    hosts = ["127.0.0.1", "127.0.0.2"]
    shares, configs = [], []
    for host in hosts:
        base = tmp_path / host
        lay_out(base, {}, {"train": train, "test": test}, REPO / "entry_point", hosts=hosts, current_host=host)
        folder = channel_dir(base, "train")
        shares.append({p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()})
        assert [p.name for p in channel_dir(base, "test").rglob("*") if p.is_file()] == [file_md5(test / "part-0")[2:]]
        configs.append(json.loads((base / "input" / "config" / "inputdataconfig.json").read_text()))
    md5s = {file_md5(p) for p in train.rglob("*") if p.is_file()}
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] == {f"{md5[:2]}/{md5[2:]}" for md5 in md5s}
    for config in configs:
        assert config["train"]["S3DistributionType"] == "ShardedByS3Key"
        assert config["test"]["S3DistributionType"] == "FullyReplicated"


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
    config = json.loads((base / "input" / "config" / "inputdataconfig.json").read_text())
    assert config["train"]["S3DistributionType"] == "FullyReplicated"  # one host: every object


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
