"""A channel that is a DVC directory output, against moto and the real DVC: a tiny DVC repo whose
`prepare` stage writes the train channel as a directory of three files (the others as one file
each), pushed to an S3 remote by `dvc push`; the job is planned and started in process, its request
read back from moto, and the recorded job laid out by `model-lib sagemaker-local --job` (what the
fake SageMaker worker runs)."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from model_lib.config import TrainConfig
from model_lib.prepared import CHANNELS, channel_paths
from model_lib.sagemaker import launch as sm_launch
from model_lib.sagemaker.options import LaunchOptions
from model_lib.tracking.lineage import dir_md5
from tests.conftest import BIN, REPO
from tests.conftest import run_checked as run
from tests.standins.sagemaker_worker import aws_account

pytestmark = pytest.mark.integration

SHARDS = ("part-00000.npz", "part-00001.npz", "nested/part-00002.npz")  # names carry nothing: any layout
# The prepare stage of the tiny repo: the train channel a folder of SHARDS, every other channel one file.
MAKE = f"""
import json, pathlib, sys
sys.path.insert(0, {str(REPO)!r})
from model_lib.prepared import channel_paths
for name, path in channel_paths("data/prepared").items():
    if name == "train":
        for i, shard in enumerate({list(SHARDS)!r}):
            (path / shard).parent.mkdir(parents=True, exist_ok=True)
            (path / shard).write_bytes(("shard %d of the train split" % i).encode())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the %s channel" % name)
"""


@pytest.fixture(scope="module")
def dir_repo(moto_server, fake_sagemaker, tmp_path_factory):
    """A git + DVC repo whose prepare outputs (train: a directory) are in dvc.lock and pushed to a moto
    bucket, with an image in ECR and a role; a dict of repo, env, bucket, s3, session, options (in-process launch)."""

    repo = tmp_path_factory.mktemp("dirrepo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "AWS_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        HOME=str(repo),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    bucket = f"dirs-{repo.name.lower().replace('_', '-')[-16:]}"
    session, clients, role, ecr = aws_account(moto_server, bucket)
    image = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    clients["ecr"].put_image(repositoryName=f"train-{bucket}", imageManifest=image, imageTag="cpu-test")

    (repo / "make.py").write_text(MAKE)
    outs = [path.relative_to(repo).as_posix() for path in channel_paths(repo / "data" / "prepared").values()]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": {"cmd": f"{BIN / 'python'} make.py", "outs": outs}}}))
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "-q"],
        ["dvc", "remote", "add", "-d", "s3", f"s3://{bucket}/dvc"],
        ["dvc", "push", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "prepared and pushed"],
    ):
        run(command, repo, env)
    options = LaunchOptions(
        image_uri=f"{ecr}:cpu-test", role_arn=role, bucket=bucket, remote="s3", source_dir=REPO / "entry_point"
    )
    return {"repo": repo, "env": env, "bucket": bucket, "s3": clients["s3"], "session": session, "options": options}


@pytest.fixture
def in_repo(dir_repo, monkeypatch):
    """This process in the repo with its AWS variables (plan and start run here)."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "HOME"):
        monkeypatch.setenv(key, dir_repo["env"][key])
    for key in ("MLFLOW_TRACKING_URI", "MODEL_LIB_MLFLOW_TAGS", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(dir_repo["repo"])
    return dir_repo


def train_md5(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = [
        out for out in lock["stages"]["prepare"]["outs"] if out["path"] == "data/prepared/" + channel_paths("")["train"].name
    ]
    return out["md5"]


def cached_listing(repo: Path, md5: str) -> list[dict[str, str]]:
    return json.loads((repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_text())


def planned(dir_repo, job_name: str, **options) -> sm_launch.LaunchPlan:
    """Return the plan of ``job_name`` (``options`` over the repo's)."""
    chosen = LaunchOptions(**{**vars(dir_repo["options"]), "job_name": job_name, **options})
    return sm_launch.plan(TrainConfig(), chosen, dir_repo["session"])


def launched(dir_repo, job_name: str, **options) -> dict:
    """Plan and start ``job_name`` (``options`` over the repo's); return its DescribeTrainingJob."""
    sm_launch.start(planned(dir_repo, job_name, **options), dir_repo["session"])
    client = dir_repo["session"].client("sagemaker", endpoint_url=dir_repo["env"]["AWS_ENDPOINT_URL"])
    return client.describe_training_job(TrainingJobName=job_name)


def test_a_directory_output_is_a_manifest_channel_of_exactly_its_dir_objects(in_repo):
    repo, bucket, s3 = in_repo["repo"], in_repo["bucket"], in_repo["s3"]
    md5 = train_md5(repo)
    assert md5.endswith(".dir") and md5 == dir_md5(repo / "data" / "prepared" / channel_paths("")["train"].name)
    described = launched(in_repo, "dirs-1", input_mode="FastFile")
    channels = {channel["ChannelName"]: channel for channel in described["InputDataConfig"]}
    assert set(channels) == set(CHANNELS)
    source = channels["train"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile" and source["S3DataDistributionType"] == "FullyReplicated"
    assert channels["train"]["InputMode"] == "FastFile"
    assert source["S3Uri"].startswith(f"s3://{bucket}/manifests/{md5}/")
    vocab = channels["vocab"]["DataSource"]["S3DataSource"]
    assert vocab["S3DataType"] == "S3Prefix" and "/dvc/files/md5/" in vocab["S3Uri"]  # one file: its object

    key = source["S3Uri"].removeprefix(f"s3://{bucket}/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    listed = sorted(entry["md5"] for entry in cached_listing(repo, md5))
    assert manifest[0] == {"prefix": f"s3://{bucket}/dvc/files/md5/"}
    assert sorted(item.replace("/", "") for item in manifest[1:]) == listed and len(listed) == len(SHARDS)
    for item in manifest[1:]:  # each an object dvc push put there
        s3.head_object(Bucket=bucket, Key=f"dvc/files/md5/{item}")

    environment = described["Environment"]  # as created (the fake SageMaker keeps it)
    assert json.loads(environment["MODEL_LIB_DATA_DIGESTS"]) == {"train": md5}
    assert json.loads(environment["MODEL_LIB_MLFLOW_TAGS"])["dvc_md5.train"] == md5  # dvc.lock's md5

    again = launched(in_repo, "dirs-2")  # the same data: the same manifest object, rewritten as it was
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in again["InputDataConfig"]}["train"] == source[
        "S3Uri"
    ]
    stored = s3.list_objects_v2(Bucket=bucket, Prefix=f"manifests/{md5}/")["Contents"]
    assert [item["Key"] for item in stored] == [key]


def distributions(channels: list[dict]) -> dict[str, tuple[str, str, str]]:
    """Return channel -> (S3DataType, S3DataDistributionType, InputMode) of a request's or a description's channels."""
    found = {}
    for channel in channels:
        source = channel["DataSource"]["S3DataSource"]
        found[channel["ChannelName"]] = (source["S3DataType"], source["S3DataDistributionType"], channel["InputMode"])
    return found


@pytest.mark.parametrize("input_mode", ["File", "FastFile"])
def test_a_two_instance_job_shards_the_train_directory_and_replicates_the_rest(in_repo, input_mode):
    name = f"dirs-multi-{input_mode.lower()}"
    request = sm_launch.start(planned(in_repo, name, instance_count=2, input_mode=input_mode), in_repo["session"], dry_run=True)
    described = launched(in_repo, name, instance_count=2, input_mode=input_mode)  # as moto stores it
    for channels in (distributions(request["InputDataConfig"]), distributions(described["InputDataConfig"])):
        assert channels["train"] == ("ManifestFile", "ShardedByS3Key", input_mode)  # 3 objects, 2 hosts
        for other in set(CHANNELS) - {"train"}:  # the coordinator evaluates the test split whole
            assert channels[other] == ("S3Prefix", "FullyReplicated", input_mode)
    one_host = sm_launch.start(planned(in_repo, "dirs-one", input_mode=input_mode), in_repo["session"], dry_run=True)
    assert distributions(one_host["InputDataConfig"])["train"] == ("ManifestFile", "FullyReplicated", input_mode)


def test_a_file_of_the_directory_not_pushed_is_named(in_repo):
    repo, bucket, s3 = in_repo["repo"], in_repo["bucket"], in_repo["s3"]
    entry = next(e for e in cached_listing(repo, train_md5(repo)) if e["relpath"] == SHARDS[1])
    key = f"dvc/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}"
    s3.delete_object(Bucket=bucket, Key=key)
    try:
        with pytest.raises(Exception, match="1 problem") as raised:
            launched(in_repo, "dirs-unpushed")
    finally:  # put it back for the other tests (DVC's remote index would still think it pushed)
        s3.upload_file(str(repo / ".dvc" / "cache" / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]), bucket, key)
    message = str(raised.value)
    assert f"channel 'train': 1 of the 3 files of s3://{bucket}/dvc/files/md5/" in message
    assert f"{SHARDS[1]} (s3://{bucket}/{key})" in message and "run `dvc push -r <remote>`" in message


def test_the_recorded_job_lays_the_directory_channel_out_as_sagemaker_does(in_repo, tmp_path):
    repo = in_repo["repo"]
    launched(in_repo, "dirs-run")
    base = tmp_path / "job"
    command = ["model-lib", "sagemaker-local", "--job", "dirs-run", "--base-dir", str(base)]
    done = subprocess.run(command, cwd=repo, env=in_repo["env"], capture_output=True, text=True, timeout=300)
    train = base / "input" / "data" / "train"
    expected = sorted(f"{e['md5'][:2]}/{e['md5'][2:]}" for e in cached_listing(repo, train_md5(repo)))
    laid_out = sorted(p.relative_to(train).as_posix() for p in train.rglob("*") if p.is_file())
    assert laid_out == expected, done.stdout + done.stderr  # each object at its key under the manifest's prefix
    assert len(list((base / "input" / "data" / "vocab").iterdir())) == 1  # a one-file channel as before
    # Training was given the channel's folder (MODEL_LIB_DATA_DIGESTS names train a directory); these
    # bytes are no split, so the job fails there, naming it.
    assert str(train) in (base / "output" / "failure").read_text()


def test_the_recorded_two_instance_job_gives_each_host_a_disjoint_share_of_the_train_directory(in_repo, tmp_path):
    repo = in_repo["repo"]
    launched(in_repo, "dirs-shards", instance_count=2)
    base = tmp_path / "job"
    # Stopped a second after the layout (as a spot reclaim is): what is tested is what each host got.
    command = ["model-lib", "sagemaker-local", "--job", "dirs-shards", "--base-dir", str(base), "--interrupt-after", "1"]
    done = subprocess.run(command, cwd=repo, env=in_repo["env"], capture_output=True, text=True, timeout=300)
    shares = []
    for host_dir in (base, base / "hosts" / "127.0.0.2"):  # the coordinator, then the other host
        train = host_dir / "input" / "data" / "train"
        shares.append({p.relative_to(train).as_posix() for p in train.rglob("*") if p.is_file()})
        config = json.loads((host_dir / "input" / "config" / "inputdataconfig.json").read_text())
        assert config["train"]["S3DistributionType"] == "ShardedByS3Key", done.stdout + done.stderr
        assert config["test"]["S3DistributionType"] == "FullyReplicated"
        assert len(list((host_dir / "input" / "data" / "test").iterdir())) == 1  # every host: the whole test split
    expected = {f"{e['md5'][:2]}/{e['md5'][2:]}" for e in cached_listing(repo, train_md5(repo))}
    assert shares[0] and shares[1] and not shares[0] & shares[1], shares
    assert shares[0] | shares[1] == expected
