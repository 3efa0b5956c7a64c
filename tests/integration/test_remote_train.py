"""`dvc repro` / `dvc exp run` with the train stage on SageMaker (MODEL_LIB_TRAIN_ON=sagemaker).

The cloud is stood in for by a real moto server (S3, ECR, IAM, SageMaker API, CloudWatch Logs) whose
training jobs live as SageMaker's (tests/standins/fake_sagemaker.py: a job is InProgress until its end is
set), and a "SageMaker worker" (tests/standins/sagemaker_worker.py) that runs each job once it appears,
as SageMaker would, with `model-lib sagemaker-local --job NAME`. MLflow is a real `mlflow server`; DVC
is the real `dvc` with an S3 remote on moto.
"""

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import logged_datasets
from tests.conftest import run_checked as run
from tests.standins.sagemaker_worker import remote_repo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}}
TRAIN = {"epochs": 2, "patience": 5, "ngram_buckets": 100003, "batch_size": 16}
CAPACITY_ERROR = "CapacityError: Unable to provision requested ML compute capacity."


@pytest.fixture(scope="module")
def remote(moto_server, fake_sagemaker, tmp_path_factory):
    """A repo copy with an S3 DVC remote, image and role in moto, a real MLflow server and the worker."""
    with remote_repo(tmp_path_factory.mktemp("remote"), {**SMALL, "train": TRAIN}, moto_server, fake_sagemaker) as found:
        yield found


def test_dvc_repro_trains_on_sagemaker_and_everything_downstream_is_as_local(remote):
    import mlflow

    repo, env, worker = remote["repo"], remote["env"], remote["worker"]
    result = run(["dvc", "repro"], repo, env)
    out = result.stdout
    assert "train: dvc push -r s3 data/prepared/train data/prepared/test" in out
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
    stage_cost = json.loads((repo / "models/cost.json").read_text())  # a train stage metric, as dvc exp show lists
    assert stage_cost["cost_usd"] == found.data.metrics["cost_usd"] and stage_cost["instance"] == "1 x ml.m5.xlarge"
    # The job's datasets are the DVC remote's objects it was given as channels, by dvc.lock's md5.
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    channels = ("data/prepared/train", "data/prepared/test", "data/prepared/vocab.txt", "data/prepared/embeddings.npy")
    locked = {Path(out["path"]).stem: out["md5"] for out in outs if out["path"] in channels}
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
    cost = json.loads((repo / "models/cost.json").read_text())  # both attempts are billed: both counted
    assert cost["attempts"] == 2 and "with 1 earlier attempt(s) of these inputs ($" in out
    assert client.get_run(run_id).data.metrics["cost_usd"] == cost["cost_usd"]

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
