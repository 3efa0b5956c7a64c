"""`dvc repro` / `dvc exp run` with the train stage on SageMaker (MODEL_LIB_TRAIN_ON=sagemaker).

The cloud is stood in for by a real moto server (S3, ECR, IAM, SageMaker API, CloudWatch Logs) whose
training jobs live as SageMaker's (tests/standins/fake_sagemaker.py: a job is InProgress until its end is
set), and a "SageMaker worker" thread here that runs each job once it appears, as SageMaker would, with
`model-lib sagemaker-local --job NAME` (the real toolkit, the job's S3 channels and code), publishing its
output to CloudWatch Logs as it goes and setting how the job ended (its exit code, its failure file). MLflow is a real
`mlflow server`; DVC is the real `dvc` with an S3 remote on moto.
"""

import hashlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, git_copy_of_repo, logged_datasets, start_mlflow_server, stop_server
from tests.conftest import run_checked as run
from tests.standins.fake_sagemaker import FakeSageMaker, status_for_exit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}}
TRAIN = {"epochs": 2, "patience": 5, "ngram_buckets": 100003, "batch_size": 16}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CAPACITY_ERROR = "CapacityError: Unable to provision requested ML compute capacity."
# What a job's behaviour gets (its name, its running `sagemaker-local` and base dir) and returns: how
# it ends instead (FakeSageMaker.end's arguments), {} to end as its exit code says.
Behaviour = Callable[[str, subprocess.Popen, Path], dict]


class SageMakerWorker(threading.Thread):
    """Runs each training job that appears in moto, once, as SageMaker would; ``paused`` holds new jobs.
    ``behaviours`` maps a job-name suffix to a :data:`Behaviour` run beside that job."""

    def __init__(self, repo: Path, env: dict[str, str], session, fake: FakeSageMaker) -> None:
        super().__init__(daemon=True)
        self.repo, self.env, self.session, self.fake = repo, env, session, fake
        self.sagemaker = session.client("sagemaker", endpoint_url=env["AWS_ENDPOINT_URL"])
        self.logs = session.client("logs", endpoint_url=env["AWS_ENDPOINT_URL"])
        self.logs.create_log_group(logGroupName=LOG_GROUP)
        self.started: list[str] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.paused = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for summary in self.sagemaker.list_training_jobs()["TrainingJobSummaries"]:
                name = summary["TrainingJobName"]  # moto is shared: other tests' jobs are not ours
                if name.startswith("model-lib-train-") and name not in self.started and not self.paused.is_set():
                    self.started.append(name)
                    self.execute(name)
            time.sleep(0.3)

    def execute(self, name: str) -> None:
        stream = f"{name}/algo-1-{int(time.time())}"
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        base_dir = self.repo.parent / f"worker-{name}"
        command = ["model-lib", "sagemaker-local", "--job", name, "--base-dir", str(base_dir)]
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=self.repo, env=self.env, **output)
        assert process.stdout is not None
        behaviour = next((b for suffix, b in self.behaviours.items() if name.endswith(suffix)), None)
        ending: dict = {}
        beside = None
        if behaviour is not None:
            beside = threading.Thread(target=lambda: ending.update(behaviour(name, process, base_dir)), daemon=True)
            beside.start()
        for line in process.stdout:
            if line.strip():
                event = {"timestamp": int(time.time() * 1000), "message": line.rstrip()[:1000]}
                self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[event])
        code = process.wait()
        if beside is not None:
            beside.join()
        failure_file = base_dir / "output" / "failure"
        failure = failure_file.read_text(encoding="utf-8") if failure_file.is_file() else None
        end = {"status": status_for_exit(code), "exit_code": code, "seconds": time.monotonic() - started, "failure": failure}
        end.update(ending)
        self.fake.end(name, end.pop("status"), **end)


@pytest.fixture(scope="module")
def remote(moto_server, fake_sagemaker, tmp_path_factory):
    """A repo copy with an S3 DVC remote, image and role in moto, a real MLflow server and the worker;
    yields what the tests need."""
    import boto3

    copy = tmp_path_factory.mktemp("remote") / "repo"
    copy.mkdir()
    env = git_copy_of_repo(copy, {**SMALL, "train": TRAIN})
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    clients = {name: session.client(name, endpoint_url=moto_server) for name in ("s3", "ecr", "iam")}
    bucket = f"remote-{copy.parent.name.lower().replace('_', '-')[-20:]}"
    clients["s3"].create_bucket(Bucket=bucket)
    role = clients["iam"].create_role(RoleName=f"sm-{bucket}", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    ecr = clients["ecr"].create_repository(repositoryName=f"train-{bucket}")["repository"]["repositoryUri"]
    outputs = {"ecr_repository_url": ecr, "sagemaker_role_arn": role, "bucket_name": bucket}
    (copy / "tf-outputs.json").write_text(json.dumps({k: {"value": v} for k, v in outputs.items()}))
    (copy / ".gitignore").write_text((copy / ".gitignore").read_text() + "/tf-outputs.json\n")
    aws = {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.update(aws, AWS_DEFAULT_REGION="us-east-1", HOME=str(copy))
    env.pop("AWS_PROFILE", None)
    run(["dvc", "remote", "add", "s3", f"s3://{bucket}/dvc"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "s3 remote"], copy, env)
    commit = run(["git", "rev-parse", "--short=7", "HEAD"], copy, env).stdout.strip()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    clients["ecr"].put_image(repositoryName=f"train-{bucket}", imageManifest=manifest, imageTag=f"cpu-{commit}")

    port = free_port()
    root = copy.parent / "mlflow"
    root.mkdir()
    server = start_mlflow_server(root, port)
    uri = f"http://127.0.0.1:{port}"
    env["MLFLOW_TRACKING_URI"] = uri
    worker = SageMakerWorker(copy, dict(env), session, fake_sagemaker)
    worker.start()
    stage_env = {
        **env,
        "MODEL_LIB_TRAIN_ON": "sagemaker",
        "MODEL_LIB_LAUNCH_OPTIONS": "--terraform-outputs tf-outputs.json --allow-local-tracking --max-run 1800",
        "MODEL_LIB_POLL_SECONDS": "1",
    }
    try:
        yield {
            "repo": copy,
            "env": stage_env,
            "bucket": bucket,
            "s3": clients["s3"],
            "worker": worker,
            "uri": uri,
            "fake": fake_sagemaker,
        }
    finally:
        worker.stopping.set()
        worker.join(timeout=600)  # while the fake is still installed for its last end
        stop_server(server)


def test_dvc_repro_trains_on_sagemaker_and_everything_downstream_is_as_local(remote):
    import mlflow

    repo, env, worker = remote["repo"], remote["env"], remote["worker"]
    result = run(["dvc", "repro"], repo, env)
    out = result.stdout
    assert "train: dvc push -r s3 data/prepared/train.npz data/prepared/test.npz" in out
    assert "train: started SageMaker job model-lib-train-" in out
    assert "InProgress / Training" in out and "Completed / Completed" in out
    assert "  | " in out and "training finished: test accuracy" in out  # the job's log lines, streamed
    assert len(worker.started) == 1
    job = worker.started[0]
    history = json.loads((repo / "models/history.json").read_text())
    assert history["sagemaker_job"] == job and history["epochs_run"] == 2 and len(history["history"]) == 2
    assert not {"run_id", "train_seconds"} & set(history)  # as a local train's: the same for the same inputs
    assert (repo / "models/model.keras").is_file()

    status = run(["dvc", "status"], repo, env)
    assert "Data and pipelines are up to date" in status.stdout
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    shown = next(iter(metrics.values()))["data"]["reports/metrics.json"]["data"]
    body = remote["s3"].get_object(Bucket=remote["bucket"], Key=f"jobs/{job}/output/model.tar.gz")["Body"].read()
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        member = archive.extractfile("metrics.json")
        assert member is not None
        job_summary = json.loads(member.read())
    assert shown["accuracy"] == job_summary["test"]["accuracy"]  # evaluate here scored the job's model

    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    assert run_id == job_summary["run_id"]
    client = mlflow.MlflowClient(tracking_uri=remote["uri"])
    experiment = client.get_run(run_id).info.experiment_id
    assert len(client.search_runs([experiment])) == 1  # one run: the job's, with evaluate's records added
    found = client.get_run(run_id)
    assert found.data.tags["sagemaker.job_name"] == job and found.data.params["evaluate.threshold"] == "0.5"
    assert found.data.tags["model_md5"] == hashlib.md5((repo / "models/model.keras").read_bytes()).hexdigest()
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [0, 1]
    assert "test_accuracy" in found.data.metrics
    # What the job cost (moto has no Price List API: the shipped table's price), printed and in the run.
    assert f"train: SageMaker job {job} cost $" in out and "1 x ml.m5.xlarge at $0.23/h, us-east-1, table as of" in out
    assert found.data.metrics["spot_saving_usd"] == 0 and found.data.metrics["cost_usd"] >= 0
    # The job's datasets are the DVC remote's objects it was given as channels, by dvc.lock's md5.
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    locked = {Path(out["path"]).stem: out["md5"] for out in outs if out["path"].endswith((".npz", ".txt", ".npy"))}
    datasets = logged_datasets(client, run_id)
    assert {name: d["digest"] for name, d in datasets.items()} == locked
    for d in datasets.values():
        assert d["source"].startswith(f"s3://{remote['bucket']}/") and d["source_type"] == "s3"
        assert d["source"].endswith(f"/files/md5/{d['digest'][:2]}/{d['digest'][2:]}")
    assert {a.path for a in client.list_artifacts(run_id, "reports")} >= {"reports/metrics.json", "reports/prepare.json"}

    # The stage forced again: the finished job of the same inputs is re-attached, not launched again.
    again = run(["dvc", "repro", "-f", "-s", "train"], repo, env)
    assert f"SageMaker job {job} already trains these inputs (Completed): re-attaching" in again.stdout
    assert worker.started == [job]


def test_ctrl_c_leaves_the_job_running_and_the_next_run_re_attaches(remote):
    repo, env, worker = remote["repo"], remote["env"], remote["worker"]
    run(["dvc", "repro", "prepare"], repo, env)
    before = len(worker.started)
    worker.paused.set()  # the job stays InProgress until the worker takes it
    command = ["model-lib", "train", "-S", "train.epochs=1"]
    # Default SIGINT handling, as a terminal user's process has, even when the tests run in a
    # background job (which starts with SIGINT ignored).
    following = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "InProgress" not in line:
            assert time.monotonic() < deadline and following.poll() is None, following.communicate()
            line = following.stdout.readline()
        following.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = following.communicate(timeout=60)
    finally:
        if following.poll() is None:
            following.kill()
    assert following.returncode == 130, err[-3000:]
    assert "it keeps running. Run the stage again to re-attach" in err
    assert remote["fake"].stop_requests == []  # nothing asked of the job

    worker.paused.clear()
    again = run(command, repo, env)
    assert "already trains these inputs (InProgress): re-attaching" in again.stdout
    assert "Completed / Completed" in again.stdout
    assert len(worker.started) == before + 1  # one job for both runs


def test_a_failed_job_fails_the_stage_with_its_reason(remote):
    repo, env = remote["repo"], remote["env"]
    command = ["model-lib", "train", "-S", "train.validation_split=0.999"]
    result = run(command, repo, env, expect=2)
    assert "Failed: " in result.stderr and "too few for validation_split=0.999" in result.stderr
    first = result.stdout.split("started SageMaker job ", 1)[1].split()[0]
    assert first.endswith("-1")
    again = run(command, repo, env, expect=2)  # a failed job is not re-attached: the next attempt runs
    assert f"started SageMaker job {first[:-2]}-2 " in again.stdout


def test_dvc_exp_run_remotely_is_listed_by_dvc_exp_show(remote):
    repo, env = remote["repo"], remote["env"]
    command = ["dvc", "exp", "run", "-S", "train.epochs=1", "-S", "train.batch_size=32", "-n", "remote-1-epoch"]
    result = run(command, repo, env)
    assert "started SageMaker job model-lib-train-" in result.stdout and "Completed / Completed" in result.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    assert "remote-1-epoch" in text
    experiments = [
        exp
        for baseline in shown
        for exp in (baseline.get("experiments") or [])
        if any(rev.get("name") == "remote-1-epoch" for rev in exp.get("revs", []))
    ]
    assert experiments, text[:3000]
    params = yaml.safe_dump(experiments)
    assert "epochs: 1" in params and "batch_size: 32" in params and "accuracy" in params


def test_spot_fallback_resumes_a_spot_attempt_that_failed_for_capacity_on_demand_in_the_same_mlflow_run(remote):
    import mlflow

    repo, env, worker = remote["repo"], dict(remote["env"]), remote["worker"]
    env["MODEL_LIB_LAUNCH_OPTIONS"] += " --spot --spot-fallback"
    run(["dvc", "repro", "prepare"], repo, env)
    first: dict = {}

    def reclaimed_for_capacity(_name: str, process: subprocess.Popen, base_dir: Path) -> dict:
        """Attempt 1 trains until it has checkpointed, is stopped (its state saved to S3), and SageMaker
        says it failed for capacity."""
        deadline = time.monotonic() + 300
        while not list((base_dir / "checkpoints").glob("gen-*")):
            if process.poll() is not None or time.monotonic() > deadline:
                return {}  # it ended on its own: the assertions below say so
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        first["exit_code"] = process.wait(timeout=120)
        first["run_id"] = json.loads((base_dir / "checkpoints" / "run.json").read_text())["run_id"]
        return {"status": "Failed", "failure": CAPACITY_ERROR}

    client = mlflow.MlflowClient(tracking_uri=remote["uri"])
    runs_before = {r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}
    worker.behaviours["-1"] = reclaimed_for_capacity
    try:
        command = ["model-lib", "train", "-S", "train.epochs=3", "-S", "train.checkpoint_steps=5", "-S", "train.seed=23"]
        result = run(command, repo, env)
    finally:
        worker.behaviours.pop("-1")
    out = result.stdout
    assert first.get("exit_code") == 143, out[-3000:]
    spot_attempt = out.split("started SageMaker job ", 1)[1].split()[0]
    base = spot_attempt.removesuffix("-1")
    second = f"{base}-2"
    assert f"train: spot attempt {spot_attempt} failed for capacity: {CAPACITY_ERROR}; attempt {second} runs on demand" in out
    assert "resuming at epoch" in out  # attempt 2's log: it continued from attempt 1's checkpoints
    assert "Completed / Completed" in out
    sagemaker = remote["worker"].sagemaker
    described = {name: sagemaker.describe_training_job(TrainingJobName=name) for name in (spot_attempt, second)}
    assert described[spot_attempt]["EnableManagedSpotTraining"] is True
    assert described[second]["EnableManagedSpotTraining"] is False
    for job in described.values():
        assert job["CheckpointConfig"]["S3Uri"] == f"s3://{remote['bucket']}/checkpoints/{base}/"
    history = json.loads((repo / "models/history.json").read_text())
    assert history["sagemaker_job"] == second and history["epochs_run"] == 3
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    assert run_id == first["run_id"]  # attempt 2 reopened attempt 1's run
    runs_after = {r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}
    assert runs_after - runs_before == {run_id}  # one MLflow run for both attempts
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [0, 1, 2]

    again = run(command, repo, env)  # the stage again: the finished on-demand attempt is re-attached
    assert f"SageMaker job {second} already trains these inputs (Completed): re-attaching" in again.stdout


def test_spot_fallback_stops_a_spot_attempt_left_in_starting_and_runs_the_next_on_demand(remote, monkeypatch):
    from tests.standins import fake_sagemaker

    repo, env, worker, fake = remote["repo"], dict(remote["env"]), remote["worker"], remote["fake"]
    env["MODEL_LIB_LAUNCH_OPTIONS"] += " --spot --spot-fallback --spot-fallback-after 2"
    monkeypatch.setattr(fake_sagemaker, "STEP_SECONDS", 8.0)  # every job now waits 8 s in Starting

    def no_capacity(name: str, process: subprocess.Popen, _base_dir: Path) -> dict:
        """Attempt 1 never gets instances: it ends Stopped once the follower asks for it."""
        deadline = time.monotonic() + 120
        while name not in fake.stop_requests and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        return {"status": "Stopped"}

    run(["dvc", "repro", "prepare"], repo, env)
    worker.behaviours["-1"] = no_capacity
    try:
        result = run(["model-lib", "train", "-S", "train.epochs=1", "-S", "train.seed=24"], repo, env)
    finally:
        worker.behaviours.pop("-1")
    out = result.stdout
    spot_attempt = out.split("started SageMaker job ", 1)[1].split()[0]
    second = f"{spot_attempt.removesuffix('-1')}-2"
    assert f"train: spot attempt {spot_attempt} waited in Starting over 2 s for capacity: stopping it" in out
    assert fake.stop_requests.count(spot_attempt) == 1
    assert f"train: spot attempt {spot_attempt} was stopped after 2 s in Starting; attempt {second} runs on demand" in out
    described = worker.sagemaker.describe_training_job(TrainingJobName=second)
    assert described["EnableManagedSpotTraining"] is False and described["TrainingJobStatus"] == "Completed"
    assert second not in fake.stop_requests  # on demand, Starting is not bounded
    assert json.loads((repo / "models/history.json").read_text())["sagemaker_job"] == second
