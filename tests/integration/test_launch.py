"""From `dvc push` to a finished spot job, against a real moto server: `model-lib launch` in a
subprocess on a temporary copy of the repo whose prepared files were pushed to an S3 DVC remote by
the real `dvc push`, then the recorded job run here as SageMaker would, interrupted once and resumed. The
jobs live as SageMaker's (tests/standins/fake_sagemaker.py): InProgress until the test sets their end."""

import io
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from model_lib.prepared import CHANNELS
from tests.conftest import git_copy_of_repo
from tests.conftest import run_checked as run
from tests.standins.fake_sagemaker import status_for_exit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}}
# Enough epochs that the reclaim lands inside training (about 1 s an epoch here).
TRAIN = {"epochs": 40, "patience": 40, "ngram_buckets": 100003, "batch_size": 8, "checkpoint_steps": 10}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
REPOSITORY = "model-lib-training"


@pytest.fixture(scope="module")
def cloud(moto_server, fake_sagemaker, tmp_path_factory):
    """A repo copy after `dvc repro prepare` and `dvc push -r s3` to a moto bucket, an ECR repository
    holding the CPU image tag of its commit, a role, and Terraform outputs naming them."""
    import boto3

    copy = tmp_path_factory.mktemp("cloud")
    env = git_copy_of_repo(copy, {**SMALL, "train": TRAIN})
    env.update(
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        MLFLOW_TRACKING_URI="https://mlflow.example.com",
        MLFLOW_TRACKING_TOKEN="never-forwarded",
        HOME=str(copy),  # no user SageMaker SDK config
    )
    env.pop("AWS_PROFILE", None)
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    clients = {name: session.client(name, endpoint_url=moto_server) for name in ("s3", "ecr", "iam")}
    bucket = f"model-lib-{copy.name.lower().replace('_', '-')[-16:]}"
    clients["s3"].create_bucket(Bucket=bucket)
    role = clients["iam"].create_role(RoleName=f"sm-{bucket}", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    ecr_url = clients["ecr"].create_repository(repositoryName=REPOSITORY)["repository"]["repositoryUri"]
    outputs = {"ecr_repository_url": ecr_url, "sagemaker_role_arn": role, "bucket_name": bucket}
    (copy / "tf-outputs.json").write_text(json.dumps({k: {"value": v} for k, v in outputs.items()}))
    run(["dvc", "repro", "prepare"], copy, env)
    run(["dvc", "remote", "add", "s3", f"s3://{bucket}/dvc"], copy, env)
    run(["dvc", "push", "-r", "s3"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "prepared and pushed"], copy, env)  # a clean tree: lineage says git_dirty false
    commit = run(["git", "rev-parse", "--short=7", "HEAD"], copy, env).stdout.strip()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    clients["ecr"].put_image(repositoryName=REPOSITORY, imageManifest=manifest, imageTag=f"cpu-{commit}")
    return {
        "repo": copy,
        "env": env,
        "bucket": bucket,
        "s3": clients["s3"],
        "session": session,
        "commit": commit,
        "outputs": outputs,
        "fake": fake_sagemaker,
    }


def launch(cloud, *args, expect=0):
    command = ["model-lib", "launch", "--terraform-outputs", "tf-outputs.json", *args]
    return run(command, cloud["repo"], cloud["env"], expect=expect)


def lock_md5s(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5s = {out["path"].split("/")[-1].split(".")[0]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}
    return {name: md5s[name] for name in CHANNELS}


def has_model_archive(cloud, job: str) -> bool:
    """Whether the job's model.tar.gz is where SageMaker puts it (a stopped or failed job uploads none)."""
    listed = cloud["s3"].list_objects_v2(Bucket=cloud["bucket"], Prefix=f"jobs/{job}/output/model.tar.gz")
    return bool(listed.get("Contents"))


def test_missing_aws_credentials_are_reported_as_such(cloud):
    env = {k: v for k, v in cloud["env"].items() if not k.startswith("AWS_") or k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    result = run(["model-lib", "launch", "--terraform-outputs", "tf-outputs.json", "--dry-run"], cloud["repo"], env, expect=2)
    assert "AWS credentials: Unable to locate credentials" in result.stderr


def test_dry_run_prints_the_full_request_and_sends_nothing(cloud):
    result = launch(cloud, "--spot", "--max-run", "3600", "--remote", "s3", "--job-name", "dry-1", "--dry-run")
    request = json.loads(result.stdout)
    assert [line for line in result.stderr.splitlines() if "ERROR" in line] == [], result.stderr  # a success says none
    bucket, md5s = cloud["bucket"], lock_md5s(cloud["repo"])
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert set(channels) == set(md5s)
    for name, source in channels.items():  # the splits: a manifest of their .dir's objects; a file: its object
        md5 = md5s[name]
        if md5.endswith(".dir"):
            assert source["S3DataType"] == "ManifestFile" and source["S3Uri"].startswith(f"s3://{bucket}/manifests/{md5}/")
        else:
            assert (source["S3DataType"], source["S3Uri"]) == ("S3Prefix", f"s3://{bucket}/dvc/files/md5/{md5[:2]}/{md5[2:]}")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{bucket}/checkpoints/dry-1/", "LocalPath": "/opt/ml/checkpoints"}
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(f"{REPOSITORY}:cpu-{cloud['commit']}")
    hps = request["HyperParameters"]
    assert hps["epochs"] == "40" and hps["model"] == '"ngram_glove"' and hps["glove_init"] == "true"
    environment = request["Environment"]
    assert set(environment) == {
        "MLFLOW_TRACKING_URI",
        "MODEL_LIB_MLFLOW_TAGS",
        "MODEL_LIB_DATA_REMOTE",
        "MODEL_LIB_DATA_DIGESTS",
    }  # never the token or AWS keys
    assert environment["MODEL_LIB_DATA_REMOTE"] == f"s3://{bucket}/dvc"  # the run's datasets name its objects
    assert json.loads(environment["MODEL_LIB_DATA_DIGESTS"]) == {"train": md5s["train"], "test": md5s["test"]}
    lineage = json.loads(environment["MODEL_LIB_MLFLOW_TAGS"])
    assert lineage["git_commit"].startswith(cloud["commit"]) and lineage["git_dirty"] == "false"
    assert {lineage[f"dvc_md5.{name}"] for name in md5s} == set(md5s.values())
    sent = cloud["session"].client("sagemaker", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"]).list_training_jobs()
    assert "dry-1" not in {job["TrainingJobName"] for job in sent["TrainingJobSummaries"]}
    assert "Contents" not in cloud["s3"].list_objects_v2(Bucket=bucket, Prefix="code/dry-1/")


def test_every_problem_is_listed_at_once_and_no_job_is_created(cloud):
    bucket, md5s = cloud["bucket"], lock_md5s(cloud["repo"])
    for name in ("vocab", "embeddings"):
        cloud["s3"].delete_object(Bucket=bucket, Key=f"dvc/files/md5/{md5s[name][:2]}/{md5s[name][2:]}")
    partial = {k: {"value": v} for k, v in cloud["outputs"].items() if k != "sagemaker_role_arn"}
    (cloud["repo"] / "partial.json").write_text(json.dumps(partial))
    try:
        command = [
            "model-lib",
            "launch",
            "--terraform-outputs",
            "partial.json",
            "--instance-type",
            "ml.g5.xlarge",
            "--job-name",
            "bad-1",
            "-S",
            "train.nb_view_weight=0.9",  # with the default 0.2 for the other view: more than 1
        ]
        result = run(command, cloud["repo"], cloud["env"], expect=2)
    finally:
        run(["dvc", "push", "-r", "s3"], cloud["repo"], cloud["env"])  # put the objects back for the other tests
    message = result.stderr
    assert "5 problem(s)" in message
    assert "train.nb_view_weight + train.nb_crop_view_weight: expected a sum <= 1, got 0.9 + 0.2" in message
    assert "terraform outputs: sagemaker_role_arn missing" in message
    assert "channel 'vocab'" in message and "channel 'embeddings'" in message and "run `dvc push -r <remote>`" in message
    assert f"{REPOSITORY}:gpu-{cloud['commit']} not in ECR" in message and "run `make docker-push`" in message
    assert "Traceback" not in message


def test_a_local_remote_or_a_local_tracking_uri_is_refused(cloud):
    result = launch(cloud, "--remote", "local", "--dry-run", expect=2)
    assert "--remote local:" in result.stderr and "is not in S3" in result.stderr
    env = {**cloud["env"], "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    refused = run(["model-lib", "launch", "--terraform-outputs", "tf-outputs.json", "--dry-run"], cloud["repo"], env, expect=2)
    assert "MLFLOW_TRACKING_URI='http://127.0.0.1:5000' is on this machine" in refused.stderr


def test_credentials_and_malformed_options_are_refused_at_once_and_shown_nowhere(cloud):
    """A password in the tracking URI or a token in the tags would be readable by anyone allowed to call
    DescribeTrainingJob; an instance type the SDK cannot use would end in its traceback. Each is named
    (exit 2), every problem at once, and stdout (where --dry-run JSON goes) stays empty."""
    tags = {"team": "nlp", "ci_token": "tag-token-1f3e", "source": "https://ci:repo-password-9d2a@git.example.com/r.git"}
    env = {
        **cloud["env"],
        "MLFLOW_TRACKING_URI": "https://trainer:uri-password-4b7c@mlflow.example.com",
        "MODEL_LIB_MLFLOW_TAGS": json.dumps(tags),
    }
    command = ["model-lib", "launch", "--terraform-outputs", "tf-outputs.json", "--dry-run", "--instance-type", "m5.xlarge"]
    result = run([*command, "--max-run", "0", "--job-name", "not_a_job_name"], cloud["repo"], env, expect=2)
    message = result.stderr
    assert result.stdout == ""
    assert "MLFLOW_TRACKING_URI='https://***@mlflow.example.com': holds credentials" in message
    assert "MODEL_LIB_MLFLOW_SECRET" in message and "--mlflow-secret" in message
    assert "MODEL_LIB_MLFLOW_TAGS: ci_token: a tag named like a credential" in message
    assert "MODEL_LIB_MLFLOW_TAGS: source: holds credentials" in message
    assert "--instance-type 'm5.xlarge': expected ml.<family>.<size>" in message
    assert "--max-run 0: expected" in message and "--job-name 'not_a_job_name': expected" in message
    for secret in ("uri-password-4b7c", "tag-token-1f3e", "repo-password-9d2a"):
        assert secret not in message
    assert "Traceback" not in message

    local = run([*command[:-1], "local_gpu"], cloud["repo"], cloud["env"], expect=2)
    assert local.stdout == "" and "--instance-type 'local_gpu': expected ml.<family>.<size>" in local.stderr
    assert "model-lib sagemaker-local" in local.stderr and "Traceback" not in local.stderr


def test_managed_mlflow_arn_a_secret_name_and_a_model_name_reach_the_job_and_nothing_secret_does(cloud):
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    env = {**cloud["env"], "MLFLOW_TRACKING_URI": arn, "MODEL_LIB_SYSTEM_METRICS": "maybe"}
    env["MODEL_LIB_SYSTEM_METRICS_SECONDS"] = "30"
    command = ["model-lib", "launch", "--terraform-outputs", "tf-outputs.json", "--job-name", "secret-1", "--dry-run"]
    missing = run([*command, "--mlflow-secret", "mlflow/absent"], cloud["repo"], env, expect=2)
    assert "--mlflow-secret 'mlflow/absent': ResourceNotFoundException" in missing.stderr
    assert "MODEL_LIB_SYSTEM_METRICS: expected true or false" in missing.stderr  # refused here, not in the job
    env["MODEL_LIB_SYSTEM_METRICS"] = "false"

    secrets = cloud["session"].client("secretsmanager", endpoint_url=env["AWS_ENDPOINT_URL"])
    secrets.create_secret(Name="mlflow/team", SecretString=json.dumps({"username": "u", "password": "do-not-ship"}))
    result = run([*command, "--mlflow-secret", "mlflow/team", "--register-model", "imdb-sentiment"], cloud["repo"], env)
    request = json.loads(result.stdout)
    environment = request["Environment"]
    assert environment["MLFLOW_TRACKING_URI"] == arn  # an ARN is not a local URI: accepted
    assert environment["MODEL_LIB_MLFLOW_SECRET"] == "mlflow/team" and environment["MODEL_LIB_REGISTER_MODEL"] == "imdb-sentiment"
    assert environment["MODEL_LIB_SYSTEM_METRICS"] == "false" and environment["MODEL_LIB_SYSTEM_METRICS_SECONDS"] == "30"
    assert "do-not-ship" not in result.stdout + result.stderr and "never-forwarded" not in result.stdout


def test_spot_job_launched_then_run_here_with_one_reclaim_and_a_resume(cloud, tmp_path, monkeypatch):
    launch(cloud, "--spot", "--remote", "s3", "--job-name", "spot-1")
    client = cloud["session"].client("sagemaker", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"])
    described = client.describe_training_job(TrainingJobName="spot-1")
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"]["S3Uri"] == f"s3://{cloud['bucket']}/checkpoints/spot-1/"
    tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]}
    assert tags["git_commit"].startswith(cloud["commit"])

    local = ["model-lib", "sagemaker-local", "--job", "spot-1", "--base-dir", str(tmp_path / "job")]
    env = {**cloud["env"], "MLFLOW_TRACKING_URI": ""}  # the stand-in job tracks nowhere
    # A reclaim can come at any moment. One during set-up stops the job with nothing to save...
    stopped = run([*local, "--interrupt-after", "1"], cloud["repo"], env, expect=143)
    assert "sagemaker-local: exit code 143" in stopped.stdout and not has_model_archive(cloud, "spot-1")
    assert not cloud["s3"].list_objects_v2(Bucket=cloud["bucket"], Prefix="checkpoints/spot-1/").get("Contents")

    # ...one during training (SIGTERM to sagemaker-local, passed on to the job, once it has checkpointed)
    # saves the state to S3. Waiting for the checkpoint, not a fixed time, keeps this true on a slow machine.
    log = tmp_path / "interrupted.log"
    with log.open("w") as sink:
        job = subprocess.Popen(local, cwd=cloud["repo"], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600
            while not list((tmp_path / "job" / "checkpoints").glob("gen-*")):
                assert job.poll() is None, f"the job ended (exit {job.returncode}) before it checkpointed\n{log.read_text()}"
                assert time.monotonic() < deadline, "the job made no checkpoint in 600 s"
                time.sleep(0.05)
            job.send_signal(signal.SIGTERM)
            assert job.wait(timeout=120) == 143, log.read_text()
        finally:
            if job.poll() is None:
                job.kill()
    assert "SIGTERM received: saving the training state" in log.read_text()
    assert "sagemaker-local: exit code 143" in log.read_text() and not has_model_archive(cloud, "spot-1")
    saved = cloud["s3"].list_objects_v2(Bucket=cloud["bucket"], Prefix="checkpoints/spot-1/")
    assert any("/gen-" in item["Key"] for item in saved.get("Contents", [])), "no checkpoint reached S3"

    resumed = run(local, cloud["repo"], env)
    assert client.describe_training_job(TrainingJobName="spot-1")["TrainingJobStatus"] == "InProgress"  # until it ends
    cloud["fake"].end("spot-1", status_for_exit(0), seconds=30)  # as SageMaker, once its container exited 0
    assert "resuming at epoch" in resumed.stdout + resumed.stderr
    assert "sagemaker-local: exit code 0" in resumed.stdout and "failure:" not in resumed.stdout
    body = cloud["s3"].get_object(Bucket=cloud["bucket"], Key="jobs/spot-1/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert {"model.keras", "metrics.json", "vocab.txt"} <= set(archive.getnames())
        archive.extractall(tmp_path / "model", filter="data")
    from model_lib.inference import load_model, predict

    probabilities = predict(
        load_model(tmp_path / "model" / "model.keras"), ["A wonderful, moving film.", "Dull and far too long."]
    )
    assert probabilities.shape == (2,) and ((probabilities >= 0) & (probabilities <= 1)).all()
    final = cloud["s3"].list_objects_v2(Bucket=cloud["bucket"], Prefix="checkpoints/spot-1/")["Contents"]
    assert {item["Key"].split("/")[2] for item in final} >= {"retired.json"}  # the final state stays in S3
    assert any("/gen-" in item["Key"] for item in final)

    # What `model-lib launch --wait` reports at the end of that job.
    from model_lib.sagemaker.launch import wait

    lines: list[str] = []
    monkeypatch.setenv("AWS_ENDPOINT_URL", cloud["env"]["AWS_ENDPOINT_URL"])
    outcome = wait("spot-1", cloud["session"], poll_seconds=0.1, report=lines.append)
    assert outcome.status == "Completed" and lines and "spot-1: Completed" in lines[-1]
    assert outcome.training_seconds == outcome.billable_seconds == 30
    assert outcome.model_artifacts == f"s3://{cloud['bucket']}/jobs/spot-1/output/model.tar.gz"
    assert outcome.test_accuracy is not None and 0.0 <= outcome.test_accuracy <= 1.0


def test_two_instance_job_from_launch_to_a_finished_job_in_the_local_stand_in(cloud, tmp_path):
    image = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    ecr = cloud["session"].client("ecr", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"])
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=image, imageTag=f"cpu-jax-{cloud['commit']}")
    short = ["-S", "train.epochs=1", "-S", "train.batch_size=32", "--remote", "s3"]
    dry = ["--instance-count", "2", *short, "--job-name", "multi-dry", "--keep-alive", "600", "--dry-run"]
    request = json.loads(launch(cloud, *dry).stdout)
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600  # a warm pool for the next job
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(f"{REPOSITORY}:cpu-jax-{cloud['commit']}")
    assert request["Environment"]["KERAS_BACKEND"] == "jax"  # moto does not keep a job's Environment: seen here
    refused = launch(cloud, "--instance-count", "0", *short, "--keep-alive", "3601", "--dry-run", expect=2)
    assert "--instance-count 0: expected 1..20" in refused.stderr and "--keep-alive 3601: expected 1..3600" in refused.stderr

    launch(cloud, "--instance-count", "2", *short, "--job-name", "multi-1")
    client = cloud["session"].client("sagemaker", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"])
    assert client.describe_training_job(TrainingJobName="multi-1")["ResourceConfig"]["InstanceCount"] == 2
    local = ["model-lib", "sagemaker-local", "--job", "multi-1", "--base-dir", str(tmp_path / "job")]
    finished = run(local, cloud["repo"], {**cloud["env"], "MLFLOW_TRACKING_URI": ""})
    assert finished.stdout.count("training finished") == 2  # both hosts' scripts
    assert "sagemaker-local: exit code 0" in finished.stdout and "failure:" not in finished.stdout
    body = cloud["s3"].get_object(Bucket=cloud["bucket"], Key="jobs/multi-1/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert {"model.keras", "metrics.json", "vocab.txt"} <= set(archive.getnames())
    worker = tmp_path / "job" / "hosts" / "127.0.0.2"
    assert (worker / "output" / "success").is_file() and not any((worker / "model").iterdir())


def test_launch_wait_with_spot_fallback_runs_an_on_demand_job_from_the_same_checkpoints(cloud, monkeypatch):
    """`model-lib launch --spot --spot-fallback --wait`, in process: the spot job fails for capacity, the
    on-demand job `<name>-on-demand` is started with its checkpoint prefix and followed to its end."""
    import threading

    from model_lib.config import load_section
    from model_lib.sagemaker import launch as sm_launch
    from model_lib.sagemaker.options import LaunchOptions

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "HOME"):
        monkeypatch.setenv(key, cloud["env"][key])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(cloud["repo"])
    options = LaunchOptions(
        spot=True, spot_fallback=True, remote="s3", job_name="fallback-1", terraform_outputs=Path("tf-outputs.json")
    )
    job = sm_launch.plan(load_section("train", Path("params.yaml"), {}), options, cloud["session"])
    sm_launch.start(job, cloud["session"])
    lines: list[str] = []
    outcome: list = []
    waiting = threading.Thread(
        target=lambda: outcome.append(
            sm_launch.wait("fallback-1", cloud["session"], poll_seconds=0.1, report=lines.append, job=job)
        )
    )
    waiting.start()
    client = cloud["session"].client("sagemaker", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"])
    cloud["fake"].end("fallback-1", "Failed", failure="InsufficientCapacityError: no ml.m5.xlarge spot capacity")
    deadline = time.monotonic() + 120
    while not any("runs on demand" in line for line in lines):
        assert waiting.is_alive() and time.monotonic() < deadline, lines
        time.sleep(0.1)
    cloud["fake"].end("fallback-1-on-demand", "Completed", seconds=5)
    waiting.join(timeout=60)
    assert outcome and outcome[0].status == "Completed" and outcome[0].job_name == "fallback-1-on-demand", lines
    expected = "launch: spot job fallback-1 failed for capacity: InsufficientCapacityError: no ml.m5.xlarge spot capacity; "
    assert expected + "job fallback-1-on-demand runs on demand from the same checkpoints" in lines
    described = client.describe_training_job(TrainingJobName="fallback-1-on-demand")
    assert described["EnableManagedSpotTraining"] is False
    assert described["CheckpointConfig"]["S3Uri"] == f"s3://{cloud['bucket']}/checkpoints/fallback-1/"
