"""`model-lib tune`, from the request to the winner in params.yaml, against a real moto server whose
tuning jobs start their trials as SageMaker's do (tests/standins/fake_sagemaker.py), each trial run by
the SageMaker worker (tests/standins/sagemaker_worker.py) with `model-lib sagemaker-local --job`, its
objective read from its log by the regexes the request carries. MLflow is a real `mlflow server`."""

import json
import signal
import time

import pytest
import yaml

from tests.conftest import run_checked as run
from tests.standins.sagemaker_worker import remote_repo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}}
TRAIN = {"epochs": 2, "patience": 5, "ngram_buckets": 100003, "batch_size": 16, "checkpoint_steps": 5}
SEARCH = {
    "objective": "val_loss",
    "strategy": "Random",
    "max_jobs": 2,
    "max_parallel_jobs": 2,
    "ranges": {"learning_rate": {"min": 0.001, "max": 0.01, "scaling": "Logarithmic"}, "batch_size": {"values": [8, 16]}},
}
TF_OUTPUTS = ["--terraform-outputs", "tf-outputs.json"]


@pytest.fixture(scope="module")
def cloud(moto_server, fake_sagemaker, tmp_path_factory):
    """A repo copy with its prepared data pushed to an S3 DVC remote on moto, image and role there, a
    real MLflow server and the SageMaker worker."""
    folder = tmp_path_factory.mktemp("tune")
    with remote_repo(folder, {**SMALL, "train": TRAIN}, moto_server, fake_sagemaker) as found:
        repo, env = found["repo"], {k: v for k, v in found["env"].items() if k != "MODEL_LIB_TRAIN_ON"}
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["tune"] = SEARCH
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro", "prepare"], repo, env)
        run(["dvc", "push", "-r", "s3"], repo, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "prepared, pushed, a tune: section"], repo, env)
        commit = run(["git", "rev-parse", "--short=7", "HEAD"], repo, env).stdout.strip()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
        ecr = found["session"].client("ecr", endpoint_url=moto_server)
        ecr.put_image(repositoryName=found["repository"], imageManifest=manifest, imageTag=f"cpu-{commit}")
        yield {**found, "env": env}


def tune(cloud, *args, expect=0, timeout=900):
    command = ["model-lib", "tune", *TF_OUTPUTS, "--allow-local-tracking", "--max-run", "1800", *args]
    return run(command, cloud["repo"], cloud["env"], expect=expect, timeout=timeout)


def lock_md5s(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"].split("/")[-1].split(".")[0]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}


def test_dry_run_prints_the_tuning_request_and_sends_nothing(cloud):
    result = tune(cloud, "--spot", "--job-name", "dry-tune", "--dry-run")
    request = json.loads(result.stdout)
    assert "No finished training job" not in result.stderr  # the SDK's warning, meaningless for a tuner
    config, definition = request["HyperParameterTuningJobConfig"], request["TrainingJobDefinition"]
    assert config["Strategy"] == "Random"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "val_loss"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.01", "ScalingType": "Logarithmic"}
    ]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ["8", "16"]}]
    from model_lib.epoch_lines import metric_definitions

    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()  # ours: no user regex
    static = definition["StaticHyperParameters"]
    assert "learning_rate" not in static and "batch_size" not in static  # tuned: each trial gets its own
    assert json.loads(static["epochs"]) == 2
    assert definition["Environment"]["MODEL_LIB_TUNING_JOB"] == "dry-tune"  # each trial checkpoints in its own subfolder
    assert definition["EnableManagedSpotTraining"] is True
    bucket = cloud["bucket"]
    checkpoints = {"S3Uri": f"s3://{bucket}/checkpoints/tuning/dry-tune/", "LocalPath": "/opt/ml/checkpoints"}
    assert definition["CheckpointConfig"] == checkpoints
    md5s = lock_md5s(cloud["repo"])
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in definition["InputDataConfig"]}
    assert set(channels) == {"train", "test", "vocab", "embeddings"}
    assert channels["vocab"]["S3Uri"] == f"s3://{bucket}/dvc/files/md5/{md5s['vocab'][:2]}/{md5s['vocab'][2:]}"
    assert channels["train"]["S3DataType"] == "ManifestFile" and md5s["train"] in channels["train"]["S3Uri"]
    sagemaker = cloud["session"].client("sagemaker", endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"])
    listed = sagemaker.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]  # moto is the session's
    assert "dry-tune" not in [job["HyperParameterTuningJobName"] for job in listed]  # nothing sent


def test_what_a_tuning_job_cannot_do_is_refused_before_anything_is_sent(cloud):
    result = tune(cloud, "--max-cost", "0.10", "--register-model", "imdb", "--dry-run", expect=2)
    assert "the tuning job could cost $" in result.stderr and "(2 trials x $" in result.stderr
    assert "--register-model: every trial would register a version" in result.stderr
    bad = tune(cloud, "--job-name", "x" * 33, "--dry-run", expect=2)
    assert "a tuning job's name is 1-32 letters" in bad.stderr


def test_a_local_search_runs_sagemaker_local_trials_with_the_cloud_mlflow_layout(cloud):
    import mlflow

    repo = cloud["repo"]
    result = tune(cloud, "--local", "--job-name", "local-1", "--apply-best", timeout=1200)
    results = json.loads((repo / "tuning-local/local-1/results.json").read_text())
    assert [t["status"] for t in results["trials"]] == ["Completed", "Completed"]
    assert all(t["objective"] > 0 for t in results["trials"])
    best = min(results["trials"], key=lambda t: t["objective"])
    assert results["best_trial"] == best["name"] and f"best trial {best['name']}, val_loss" in result.stdout
    assert "  | " in result.stdout  # each trial's own output, shown as it comes

    client = mlflow.MlflowClient(tracking_uri=cloud["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("mlflow.runName") == "local-1")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.data.tags["best_trial"] == best["name"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_loss"] == pytest.approx(best["objective"])
    train = yaml.safe_load((repo / "params.yaml").read_text())["train"]
    assert (train["learning_rate"], train["batch_size"]) == (best["values"]["learning_rate"], best["values"]["batch_size"])
    run(["git", "checkout", "params.yaml"], repo, cloud["env"])  # the cloud test starts from the committed params


def interrupt_once(name, process, base_dir):
    """A spot reclaim of the trial's first run: SIGTERM once its first checkpoint is on disk."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if list((base_dir / "checkpoints").glob(f"{name}/gen-*")):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    return {}


def test_a_spot_tuning_job_runs_its_trials_groups_them_in_mlflow_and_applies_the_best(cloud):
    import mlflow

    worker, repo = cloud["worker"], cloud["repo"]
    worker.behaviours["-001-"] = interrupt_once
    worker.restart_reclaimed = lambda job: "-001-" in job
    result = tune(cloud, "--spot", "--job-name", "tune-e2e", "--apply-best", timeout=1500)
    out = result.stdout
    assert "tune: started tuning job tune-e2e (Random, 2 trials, 2 at once" in out
    assert "best so far: tune-e2e-00" in out and "tune: tune-e2e Completed: 2 trials completed" in out
    trial_names = [line.split()[2] for line in out.splitlines() if " trial tune-e2e-" in line and line.endswith(")")]
    assert len(set(trial_names)) == 2

    client = mlflow.MlflowClient(tracking_uri=cloud["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("mlflow.runName") == "tune-e2e")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["sagemaker.job_name"] for r in children) == sorted(set(trial_names))  # one run per trial
    reclaimed = next(r for r in children if "-001-" in r.data.tags["sagemaker.job_name"])
    assert reclaimed.data.tags.get("model_lib.restarts") == "1"  # the restart reopened the trial's own run
    assert sorted(m.step for m in client.get_metric_history(reclaimed.info.run_id, "val_loss")) == [0, 1]
    best = min(children, key=lambda r: r.data.metrics["val_loss"] if "val_loss" in r.data.metrics else 9)
    assert parent.data.params["strategy"] == "Random" and "range.learning_rate" in parent.data.params
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["best_trial"] == best.data.tags["sagemaker.job_name"]

    train = yaml.safe_load((repo / "params.yaml").read_text())["train"]
    assert train["learning_rate"] == pytest.approx(float(best.data.params["learning_rate"]))
    assert train["batch_size"] == int(best.data.params["batch_size"])
    assert "into params.yaml; `dvc repro`" in out

    # The train stage on SageMaker with the tuning job's options finds the winner's job: nothing is trained again.
    started = len(worker.started)
    stage_env = {**cloud["env"], "MODEL_LIB_TRAIN_ON": "sagemaker"}
    stage_env["MODEL_LIB_LAUNCH_OPTIONS"] = f"{' '.join(TF_OUTPUTS)} --allow-local-tracking --max-run 1800 --spot"
    stage = run(["dvc", "repro", "train"], repo, stage_env)
    winner = parent.data.tags["best_trial"]
    reattached = f"train: SageMaker job {winner}, the best trial of tuning job tune-e2e, trained these inputs: re-attaching"
    assert reattached in stage.stdout
    assert len(worker.started) == started
    history = json.loads((repo / "models/history.json").read_text())
    assert history["sagemaker_job"] == winner
    assert json.loads((repo / "models/mlflow_run.json").read_text())["run_id"] == best.info.run_id  # evaluate adds to it
