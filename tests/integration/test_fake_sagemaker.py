"""The fake SageMaker (tests/standins/fake_sagemaker.py) on the session's moto server, driven by boto3:
training-job status follows the end set by whatever runs the job, not moto's instant Completed; tuning
jobs start trials, score them from their log lines and follow them as SageMaker's (the SDK v2 tuner
can attach to one); the worker (tests/standins/sagemaker_worker.py) runs trials, restarts a reclaimed
spot trial and stops a stopped one, with a stand-in `model-lib` (no training here: seconds)."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from model_lib.sagemaker.jobs import LOG_GROUP
from tests.standins.fake_sagemaker import FakeSageMaker, status_for_exit

pytestmark = pytest.mark.integration

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:cpu-abc"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
METRICS = [{"Name": "validation:accuracy", "Regex": "val_accuracy: ([0-9.]+)"}]


@pytest.fixture(scope="module")
def world(moto_server: str) -> dict[str, Any]:
    """A bucket and a role in moto, SageMaker's log group, and its sagemaker, s3 and logs clients."""
    s3 = boto3.client("s3", endpoint_url=moto_server, **CREDENTIALS)
    iam = boto3.client("iam", endpoint_url=moto_server, **CREDENTIALS)
    bucket = f"status-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    statement = {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    role = iam.create_role(RoleName=f"sm-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_server, **CREDENTIALS)
    logs = boto3.client("logs", endpoint_url=moto_server, **CREDENTIALS)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):  # moto is shared by the session
        logs.create_log_group(logGroupName=LOG_GROUP)
    return {"s3": s3, "bucket": bucket, "role": role, "sagemaker": sagemaker, "logs": logs, "url": moto_server}


def create_job(world: dict[str, Any], prefix: str = "job") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    world["sagemaker"].create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": METRICS},
        RoleArn=world["role"],
        OutputDataConfig={"S3OutputPath": f"s3://{world['bucket']}/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def statuses(transitions: list[dict[str, Any]]) -> list[str]:
    return [t["Status"] for t in transitions]


def test_describe_and_list_follow_the_end(fake_sagemaker: FakeSageMaker, world: dict[str, Any]) -> None:
    client = world["sagemaker"]
    name = create_job(world)

    job = client.describe_training_job(TrainingJobName=name)
    assert job["TrainingJobStatus"] == "InProgress"
    assert job["SecondaryStatus"] in ("Starting", "Downloading")  # Starting for the first second
    for absent in ("TrainingEndTime", "ModelArtifacts", "FailureReason", "TrainingTimeInSeconds", "FinalMetricDataList"):
        assert absent not in job
    assert (
        statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading"][: 1 + (job["SecondaryStatus"] != "Starting")]
    )
    assert "EndTime" not in job["SecondaryStatusTransitions"][-1]
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == METRICS  # not moto's own

    time.sleep(max(0.0, job["CreationTime"].timestamp() + 2.1 - time.time()))
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("InProgress", "Training")
    transitions = job["SecondaryStatusTransitions"]
    assert statuses(transitions) == ["Starting", "Downloading", "Training"]
    assert all("EndTime" in t for t in transitions[:-1]) and "EndTime" not in transitions[-1]
    assert job["TrainingStartTime"] >= job["CreationTime"]

    fake_sagemaker.end(name, "Completed", seconds=12.7)
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Completed", "Completed")
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{world['bucket']}/jobs/{name}/output/model.tar.gz"
    assert job["TrainingTimeInSeconds"] == job["BillableTimeInSeconds"] == 12
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"]
    assert "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"]) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])

    failed = create_job(world, "failed")
    fake_sagemaker.end(failed, "Failed", failure="ValueError: boom")
    job = client.describe_training_job(TrainingJobName=failed)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"] == "ValueError: boom"
    assert "ModelArtifacts" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-1] == "Failed"

    long_failure = create_job(world, "long")
    fake_sagemaker.end(long_failure, "Failed", failure="x" * 5000)
    assert len(client.describe_training_job(TrainingJobName=long_failure)["FailureReason"]) == 1024

    running = create_job(world, "running")
    listed = {s["TrainingJobName"]: s for s in client.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]}
    assert listed[name]["TrainingJobStatus"] == "Completed"
    assert listed[failed]["TrainingJobStatus"] == "Failed"
    assert listed[running]["TrainingJobStatus"] == "InProgress"
    assert "TrainingEndTime" not in listed[running] and "TrainingEndTime" in listed[failed]
    in_progress = client.list_training_jobs(StatusEquals="InProgress", MaxResults=100)["TrainingJobSummaries"]
    assert running in {s["TrainingJobName"] for s in in_progress}
    assert {s["TrainingJobStatus"] for s in in_progress} == {"InProgress"}

    with pytest.raises(ClientError) as raised:  # moto's errors are as they were
        client.describe_training_job(TrainingJobName="no-such-job")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_stop_is_recorded(fake_sagemaker: FakeSageMaker, world: dict[str, Any]) -> None:
    client = world["sagemaker"]
    name = create_job(world, "stop")
    assert name not in fake_sagemaker.stop_requests

    client.stop_training_job(TrainingJobName=name)
    assert fake_sagemaker.stop_requests.count(name) == 1
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopping", "Stopping")

    fake_sagemaker.end(name, status_for_exit(143))
    job = client.describe_training_job(TrainingJobName=name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "ModelArtifacts" not in job and "FailureReason" not in job
    assert statuses(job["SecondaryStatusTransitions"])[-2:] == ["Stopping", "Stopped"]

    for ended in (name, "no-such-job"):  # as SageMaker: an ended or unknown job cannot be stopped
        with pytest.raises(ClientError) as raised:
            client.stop_training_job(TrainingJobName=ended)
        assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert fake_sagemaker.stop_requests.count(name) == 1


def test_an_end_that_is_not_one_is_refused_and_exit_codes_map_to_sagemaker_statuses(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    name = create_job(world, "bad-end")
    with pytest.raises(ValueError, match="status: expected one of"):
        fake_sagemaker.end(name, "Done")
    assert world["sagemaker"].describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    assert [status_for_exit(code) for code in (0, 143, 1, 137)] == ["Completed", "Stopped", "Failed", "Failed"]


# Hyperparameter tuning jobs: trials started, scored from their log and followed as SageMaker's.
OBJECTIVE_REGEX = r"epoch [0-9]+/[0-9]+:.* {}=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
EPOCH_METRICS = [{"Name": name, "Regex": OBJECTIVE_REGEX.format(name)} for name in ("val_loss", "val_accuracy")]
RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ],
    "IntegerParameterRanges": [{"Name": "batch_size", "MinValue": "8", "MaxValue": "64", "ScalingType": "Auto"}],
    "CategoricalParameterRanges": [{"Name": "model", "Values": ["cnn", "bilstm", "ngram"]}],
}


def create_tuning_job(
    world: dict[str, Any],
    *,
    maximum: int | None = 3,
    parallel: int = 2,
    strategy: str = "Random",
    ranges: dict[str, Any] | None = None,
    objective: tuple[str, str] = ("Minimize", "val_loss"),
    spot: bool = False,
    **config: Any,
) -> str:
    """Create a tuning job of ``strategy`` on moto with boto3, as the SDK sends one; return its name."""
    name = f"tune-{uuid.uuid4().hex[:8]}"
    limits = {"MaxParallelTrainingJobs": parallel} | ({"MaxNumberOfTrainingJobs": maximum} if maximum else {})
    world["sagemaker"].create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": strategy,
            "ResourceLimits": limits,
            "TrainingJobEarlyStoppingType": "Off",
            "HyperParameterTuningJobObjective": {"Type": objective[0], "MetricName": objective[1]},
            "ParameterRanges": RANGES if ranges is None else ranges,
            **config,
        },
        TrainingJobDefinition={
            "StaticHyperParameters": {"epochs": "3", "sagemaker_program": '"train.py"'},
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": EPOCH_METRICS},
            "RoleArn": world["role"],
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{world['bucket']}/train"}},
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{world['bucket']}/jobs"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600, **({"MaxWaitTimeInSeconds": 7200} if spot else {})},
            "EnableManagedSpotTraining": spot,
            "CheckpointConfig": {"S3Uri": f"s3://{world['bucket']}/checkpoints/{name}/"},
            "Environment": {"MODEL_LIB_TUNING": name},
        },
        Tags=[{"Key": "project", "Value": "model-lib"}],
    )
    return name


def trials(world: dict[str, Any], tuning: str, **request: Any) -> list[dict[str, Any]]:
    """Return ListTrainingJobsForHyperParameterTuningJob's summaries (all pages unless MaxResults is given)."""
    listed = world["sagemaker"].list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning, **request)
    summaries = listed["TrainingJobSummaries"]
    while "NextToken" in listed and "MaxResults" not in request:
        listed = world["sagemaker"].list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning, NextToken=listed["NextToken"]
        )
        summaries += listed["TrainingJobSummaries"]
    return summaries


def trial_names(world: dict[str, Any], tuning: str) -> list[str]:
    return sorted(s["TrainingJobName"] for s in trials(world, tuning))


def put_log(world: dict[str, Any], job: str, lines: list[str]) -> None:
    """Put ``lines`` in job ``job``'s log stream in moto's CloudWatch Logs, as the worker does."""
    logs = world["logs"]
    stream = f"{job}/algo-1-{int(time.time())}"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


def epoch_lines(*val_losses: float, accuracy: float = 0.8) -> list[str]:
    count = len(val_losses)
    return [
        f"epoch {i + 1}/{count}: loss=0.41 val_loss={loss:.4f} val_accuracy={accuracy:.2f} (1.2 s)"
        for i, loss in enumerate(val_losses)
    ]


def end_trial(fake: FakeSageMaker, world: dict[str, Any], trial: str, *val_losses: float, accuracy: float = 0.8) -> None:
    """End ``trial`` Completed after it logged an epoch line per value of ``val_losses``."""
    put_log(world, trial, epoch_lines(*val_losses, accuracy=accuracy))
    fake.end(trial, "Completed", seconds=3)


def tuning_job(world: dict[str, Any], name: str) -> dict[str, Any]:
    return world["sagemaker"].describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)


def test_a_random_tuning_job_runs_its_parallel_trials_then_the_next_as_one_ends(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    client = world["sagemaker"]
    tuning = create_tuning_job(world, maximum=3, parallel=2, spot=True)
    first = trial_names(world, tuning)
    assert len(first) == 2
    for number, trial in enumerate(first, 1):
        assert re.fullmatch(rf"{tuning}-00{number}-[0-9a-f]{{8}}", trial)
    listed = {s["TrainingJobName"]: s for s in client.list_training_jobs(NameContains=tuning)["TrainingJobSummaries"]}
    assert sorted(listed) == first and {s["TrainingJobStatus"] for s in listed.values()} == {"InProgress"}
    described = tuning_job(world, tuning)
    assert described["HyperParameterTuningJobStatus"] == "InProgress"
    assert described["TrainingJobStatusCounters"] == {
        "Completed": 0, "InProgress": 2, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0
    }  # fmt: skip
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 0, "Pending": 2, "Failed": 0}
    assert "BestTrainingJob" not in described and "HyperParameterTuningEndTime" not in described
    assert described["TrainingJobDefinition"]["StaticHyperParameters"]["_tuning_objective_metric"] == "val_loss"

    end_trial(fake_sagemaker, world, first[0], 0.5, 0.4)
    names = trial_names(world, tuning)
    assert len(names) == 3 and names[:2] == first and names[2].startswith(f"{tuning}-003-")
    assert tuning_job(world, tuning)["TrainingJobStatusCounters"]["InProgress"] == 2
    for trial in names[1:]:
        end_trial(fake_sagemaker, world, trial, 0.45)
    described = tuning_job(world, tuning)
    assert trial_names(world, tuning) == names  # no fourth: MaxNumberOfTrainingJobs is 3
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["TrainingJobStatusCounters"]["Completed"] == 3
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 3, "Pending": 0, "Failed": 0}
    assert described["HyperParameterTuningEndTime"] >= described["CreationTime"]


@pytest.mark.parametrize("strategy", ["Random", "Bayesian", "Hyperband"])  # the fake samples all three at random
def test_a_trial_is_a_training_job_of_the_definition_with_its_tuned_hyperparameters(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any], strategy: str
) -> None:
    client = world["sagemaker"]
    tuning = create_tuning_job(world, maximum=4, parallel=4, spot=True, strategy=strategy)
    summaries = trials(world, tuning)
    tuning_arn = tuning_job(world, tuning)["HyperParameterTuningJobArn"]
    for summary in summaries:
        job = client.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        tuned = summary["TunedHyperParameters"]
        assert set(tuned) == {"learning_rate", "batch_size", "model"}
        assert 0.0001 <= float(tuned["learning_rate"]) <= 0.1 and "e" not in tuned["learning_rate"]  # a decimal string
        assert 8 <= int(tuned["batch_size"]) <= 64 and tuned["batch_size"] == str(int(tuned["batch_size"]))
        assert tuned["model"] in ("cnn", "bilstm", "ngram")
        static = {"epochs": "3", "sagemaker_program": '"train.py"', "_tuning_objective_metric": "val_loss"}
        assert job["HyperParameters"] == {**static, **tuned}
        assert job["TuningJobArn"] == tuning_arn
        assert (job["TrainingJobStatus"], job["EnableManagedSpotTraining"]) == ("InProgress", True)
        assert job["AlgorithmSpecification"] == {
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": EPOCH_METRICS,
        }
        assert job["CheckpointConfig"] == {"S3Uri": f"s3://{world['bucket']}/checkpoints/{tuning}/"}
        assert job["Environment"] == {"MODEL_LIB_TUNING": tuning}
        assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
        assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{world['bucket']}/train"
        assert job["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
        assert client.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"] == [{"Key": "project", "Value": "model-lib"}]
    assert len({tuple(sorted(s["TunedHyperParameters"].items())) for s in summaries}) == 4
    for summary in summaries:
        fake_sagemaker.end(summary["TrainingJobName"], "Completed")


def test_the_objective_is_the_last_value_its_regex_matched_in_the_trial_log(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    client = world["sagemaker"]
    tuning = create_tuning_job(world, maximum=2, parallel=2)
    scored, silent = trial_names(world, tuning)
    lines = [
        "epoch 1/3: loss=0.62 val_loss=0.5000 val_accuracy=0.71 (1.3 s)",
        "not an epoch line: val_loss=0.0001",
        "epoch 2/3: loss=0.41 val_loss=0.3500 val_accuracy=0.87 (1.2 s)",
        "epoch 3/3: loss=0.30 val_loss=0.4100 val_accuracy=0.86 (1.2 s)",  # worse than epoch 2, but the last
    ]
    put_log(world, scored, lines)
    fake_sagemaker.end(scored, "Completed", seconds=4)
    put_log(world, silent, ["training finished without an epoch line"])
    fake_sagemaker.end(silent, "Completed", seconds=4)

    metrics = {m["MetricName"]: m["Value"] for m in client.describe_training_job(TrainingJobName=scored)["FinalMetricDataList"]}
    assert metrics == {"val_loss": 0.41, "val_accuracy": 0.86}
    assert "FinalMetricDataList" not in client.describe_training_job(TrainingJobName=silent)
    summaries = {s["TrainingJobName"]: s for s in trials(world, tuning)}
    assert summaries[scored]["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": "Minimize",
        "MetricName": "val_loss",
        "Value": 0.41,
    }
    assert summaries[scored]["ObjectiveStatus"] == "Succeeded"
    assert "FinalHyperParameterTuningJobObjectiveMetric" not in summaries[silent]
    assert summaries[silent]["ObjectiveStatus"] == "Failed"  # Completed, but no objective in its log
    described = tuning_job(world, tuning)
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 1, "Pending": 0, "Failed": 1}
    assert described["BestTrainingJob"]["TrainingJobName"] == scored


@pytest.mark.parametrize(("objective", "best"), [(("Minimize", "val_loss"), 1), (("Maximize", "val_accuracy"), 0)])
def test_the_best_training_job_is_the_completed_trial_with_the_best_objective(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any], objective: tuple[str, str], best: int
) -> None:
    tuning = create_tuning_job(world, maximum=3, parallel=3, objective=objective)
    names = trial_names(world, tuning)
    end_trial(fake_sagemaker, world, names[0], 0.40, accuracy=0.90)  # the most accurate
    end_trial(fake_sagemaker, world, names[1], 0.30, accuracy=0.80)  # the lowest loss
    put_log(world, names[2], epoch_lines(0.1, accuracy=0.99))
    fake_sagemaker.end(names[2], "Failed", failure="AlgorithmError: boom")  # a failed trial is never the best
    found = tuning_job(world, tuning)["BestTrainingJob"]
    assert found["TrainingJobName"] == names[best]
    assert found["TrainingJobStatus"] == "Completed" and found["ObjectiveStatus"] == "Succeeded"
    value = {"val_loss": [0.40, 0.30], "val_accuracy": [0.90, 0.80]}[objective[1]][best]
    assert found["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": objective[0],
        "MetricName": objective[1],
        "Value": value,
    }
    assert found["TrainingJobArn"].endswith(f":training-job/{names[best]}")
    assert set(found["TunedHyperParameters"]) == {"learning_rate", "batch_size", "model"}
    assert found["TrainingEndTime"] >= found["CreationTime"]
    failed = next(s for s in trials(world, tuning) if s["TrainingJobName"] == names[2])
    assert (failed["TrainingJobStatus"], failed["ObjectiveStatus"], failed["FailureReason"]) == (
        "Failed",
        "Failed",
        "AlgorithmError: boom",
    )
    assert tuning_job(world, tuning)["TrainingJobStatusCounters"]["NonRetryableError"] == 1


def test_a_grid_tuning_job_walks_the_product_of_its_categorical_then_integer_ranges(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    grid = {
        "IntegerParameterRanges": [{"Name": "epochs", "MinValue": "1", "MaxValue": "3"}],
        "CategoricalParameterRanges": [{"Name": "model", "Values": ["cnn", "bilstm"]}],
        "ContinuousParameterRanges": [],
    }
    tuning = create_tuning_job(world, maximum=None, parallel=2, strategy="Grid", ranges=grid)
    assert tuning_job(world, tuning)["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    walked: list[dict[str, str]] = []
    while running := [s for s in trials(world, tuning, SortBy="Name") if s["TrainingJobStatus"] == "InProgress"]:
        walked.append(running[0]["TunedHyperParameters"])
        end_trial(fake_sagemaker, world, running[0]["TrainingJobName"], 0.5)
    assert walked == [{"model": m, "epochs": e} for m in ("cnn", "bilstm") for e in ("1", "2", "3")]
    assert tuning_job(world, tuning)["HyperParameterTuningJobStatus"] == "Completed"

    with pytest.raises(ClientError) as raised:  # as SageMaker: a grid has no continuous range
        create_tuning_job(world, maximum=None, strategy="Grid")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_random_sampling_is_reproducible_by_seed_and_repeats_no_combination_while_one_is_left(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    def tuned(tuning: str) -> list[dict[str, str]]:
        return [s["TunedHyperParameters"] for s in trials(world, tuning, SortBy="Name")]

    seeded = [create_tuning_job(world, maximum=4, parallel=4, RandomSeed=7) for _ in range(2)]
    assert tuned(seeded[0]) == tuned(seeded[1])
    assert tuned(seeded[0]) != tuned(create_tuning_job(world, maximum=4, parallel=4, RandomSeed=8))

    small = {"CategoricalParameterRanges": [{"Name": "model", "Values": ["cnn", "bilstm", "ngram"]}]}
    tuning = create_tuning_job(world, maximum=3, parallel=3, ranges=small)
    assert sorted(t["model"] for t in tuned(tuning)) == ["bilstm", "cnn", "ngram"]


def test_listing_a_tuning_jobs_trials_filters_by_status_sorts_by_objective_and_pages(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    tuning = create_tuning_job(world, maximum=4, parallel=4)
    names = trial_names(world, tuning)
    end_trial(fake_sagemaker, world, names[0], 0.30)
    end_trial(fake_sagemaker, world, names[1], 0.10)
    fake_sagemaker.end(names[2], "Failed", failure="AlgorithmError: boom")

    completed = trials(world, tuning, StatusEquals="Completed")
    assert sorted(s["TrainingJobName"] for s in completed) == names[:2]
    assert [s["TrainingJobName"] for s in trials(world, tuning, StatusEquals="InProgress")] == [names[3]]
    ascending = [s["TrainingJobName"] for s in trials(world, tuning, SortBy="FinalObjectiveMetricValue", SortOrder="Ascending")]
    assert ascending[:2] == [names[1], names[0]] and set(ascending[2:]) == set(names[2:])  # without an objective: last
    descending = [s["TrainingJobName"] for s in trials(world, tuning, SortBy="FinalObjectiveMetricValue", SortOrder="Descending")]
    assert descending[:2] == [names[0], names[1]]
    assert [s["TrainingJobName"] for s in trials(world, tuning, SortBy="Name", SortOrder="Descending")] == names[::-1]

    page = world["sagemaker"].list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning, SortBy="Name", MaxResults=3
    )
    assert [s["TrainingJobName"] for s in page["TrainingJobSummaries"]] == names[:3] and "NextToken" in page
    rest = world["sagemaker"].list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning, SortBy="Name", MaxResults=3, NextToken=page["NextToken"]
    )
    assert [s["TrainingJobName"] for s in rest["TrainingJobSummaries"]] == names[3:] and "NextToken" not in rest
    fake_sagemaker.end(names[3], "Completed")

    with pytest.raises(ClientError) as raised:
        trials(world, "no-such-tuning-job")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFound"


def test_stopping_a_tuning_job_stops_its_running_trials_and_starts_no_more(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    client = world["sagemaker"]
    tuning = create_tuning_job(world, maximum=5, parallel=2)
    first = trial_names(world, tuning)
    end_trial(fake_sagemaker, world, first[0], 0.3)
    running = [name for name in trial_names(world, tuning) if name != first[0]]
    assert len(running) == 2

    client.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)
    assert tuning_job(world, tuning)["HyperParameterTuningJobStatus"] == "Stopping"
    assert [name for name in fake_sagemaker.stop_requests if name.startswith(tuning)] == running
    assert {client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] for name in running} == {"Stopping"}
    fake_sagemaker.end(running[0], "Stopped")
    assert tuning_job(world, tuning)["HyperParameterTuningJobStatus"] == "Stopping"  # until every trial has ended
    fake_sagemaker.end(running[1], "Stopped")

    described = tuning_job(world, tuning)
    assert described["HyperParameterTuningJobStatus"] == "Stopped" and "HyperParameterTuningEndTime" in described
    assert described["TrainingJobStatusCounters"] == {
        "Completed": 1, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 2
    }  # fmt: skip
    assert len(trial_names(world, tuning)) == 3  # none started after the stop
    assert described["BestTrainingJob"]["TrainingJobName"] == first[0]
    for ended in (tuning, "no-such-tuning-job"):  # as SageMaker: an ended or unknown tuning job cannot be stopped
        with pytest.raises(ClientError) as raised:
            client.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=ended)
        assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_a_tuning_job_whose_objective_has_no_metric_definition_is_refused(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as raised:
        create_tuning_job(world, objective=("Maximize", "val_auc"))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "Provide a metric in the metric definitions" in raised.value.response["Error"]["Message"]


@pytest.fixture
def sdk_session(aws_env: str, world: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A SageMaker SDK v2 session on moto, telemetry off and no user's SDK defaults (as launch.sdk_session makes it)."""
    import sagemaker
    from sagemaker.config import load_sagemaker_config

    config_file = tmp_path / "sagemaker-config.yaml"
    config_file.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config_file))
    monkeypatch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(config_file))
    boto_session = boto3.Session(**CREDENTIALS)
    return sagemaker.Session(boto_session=boto_session, default_bucket=world["bucket"], sagemaker_config=load_sagemaker_config())


def test_the_sdk_tuner_launches_on_the_fake_attaches_to_it_and_finds_its_best_training_job(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any], sdk_session: Any
) -> None:
    from sagemaker.estimator import Estimator
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

    estimator = Estimator(
        image_uri=IMAGE,
        role=world["role"],
        instance_count=1,
        instance_type="ml.m5.xlarge",
        output_path=f"s3://{world['bucket']}/jobs",
        hyperparameters={"epochs": 3},
        use_spot_instances=True,
        max_run=3600,
        max_wait=7200,
        checkpoint_s3_uri=f"s3://{world['bucket']}/checkpoints/sdk/",
        environment={"MODEL_LIB_TUNING": "sdk"},
        sagemaker_session=sdk_session,
    )
    ranges = {
        "learning_rate": ContinuousParameter(0.0001, 0.1, scaling_type="Logarithmic"),
        "batch_size": IntegerParameter(8, 64),
        "model": CategoricalParameter(["cnn", "bilstm"]),
    }
    tuner = HyperparameterTuner(
        estimator, "val_loss", ranges, EPOCH_METRICS, objective_type="Minimize", max_jobs=2, max_parallel_jobs=2,
        strategy="Random", base_tuning_job_name="sdk-tune",
    )  # fmt: skip
    tuner.fit({"train": f"s3://{world['bucket']}/train"}, wait=False)
    name = tuner.latest_tuning_job.name
    summaries = trials(world, name)
    assert len(summaries) == 2
    job = world["sagemaker"].describe_training_job(TrainingJobName=summaries[0]["TrainingJobName"])
    assert job["HyperParameters"]["epochs"] == "3" and job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"] == f"s3://{world['bucket']}/checkpoints/sdk/"
    assert job["Environment"] == {"MODEL_LIB_TUNING": "sdk"}
    assert job["InputDataConfig"][0]["ChannelName"] == "train"
    end_trial(fake_sagemaker, world, summaries[0]["TrainingJobName"], 0.5, 0.2)
    end_trial(fake_sagemaker, world, summaries[1]["TrainingJobName"], 0.3)

    attached = HyperparameterTuner.attach(name, sagemaker_session=sdk_session)
    assert attached.best_training_job() == summaries[0]["TrainingJobName"]
    assert attached.describe()["HyperParameterTuningJobStatus"] == "Completed"
    assert attached.objective_metric_name == "val_loss" and attached.max_jobs == 2
    frame = attached.analytics().dataframe()
    assert sorted(frame["FinalObjectiveValue"]) == [0.2, 0.3]
    attached.stop_tuning_job()  # the SDK lets the ValidationException for an ended job pass


# The worker, with a stand-in `model-lib` (each of its runs records its base dir; a job's first run
# holds while repo/hold exists, until SIGTERM; a later run resumes): what it does with trials is seen
# in seconds, without training.
STAND_IN = """#!{python}
import signal, sys, time
from pathlib import Path

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # as model-lib sagemaker-local exits on SIGTERM
args = sys.argv[1:]
job, base = args[args.index("--job") + 1], Path(args[args.index("--base-dir") + 1])
runs = Path("runs") / job
runs.mkdir(parents=True, exist_ok=True)
run = len(list(runs.iterdir()))
(runs / str(run)).write_text(str(base))
base.mkdir(parents=True)
print(f"run {{run}} of {{job}} in {{base.name}}", flush=True)
if run == 0:
    print("epoch 1/2: loss=0.60 val_loss=0.5000 val_accuracy=0.70 (0.1 s)", flush=True)
    (base / "holding").touch()
    deadline = time.monotonic() + 60
    while Path("hold").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    print("epoch 2/2: loss=0.50 val_loss=0.4000 val_accuracy=0.80 (0.1 s)", flush=True)
else:
    print("resuming at epoch 2", flush=True)
    print("epoch 2/2: loss=0.45 val_loss=0.3000 val_accuracy=0.85 (0.1 s)", flush=True)
"""


@pytest.fixture
def worker(fake_sagemaker: FakeSageMaker, world: dict[str, Any], tmp_path: Any) -> Any:
    """A running SageMakerWorker whose `model-lib` is :data:`STAND_IN` (its repo: tmp_path/repo)."""
    import os
    import sys

    from tests.standins.sagemaker_worker import SageMakerWorker

    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir()
    bin_dir.mkdir()
    (bin_dir / "model-lib").write_text(STAND_IN.format(python=sys.executable))
    (bin_dir / "model-lib").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AWS_ENDPOINT_URL": world["url"]}
    running = SageMakerWorker(repo, env, boto3.Session(**CREDENTIALS), fake_sagemaker)
    running.start()
    try:
        yield running
    finally:
        running.stopping.set()
        running.join(timeout=120)


def wait_for(condition: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return found


def log_messages(world: dict[str, Any], job: str) -> list[str]:
    events = world["logs"].filter_log_events(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")["events"]
    return [event["message"] for event in events]


def test_the_worker_runs_each_trial_and_restarts_a_reclaimed_spot_trial_on_a_new_instance(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any], worker: Any
) -> None:
    import signal
    import subprocess
    from pathlib import Path

    (worker.repo / "hold").touch()

    def reclaimed(_name: str, process: subprocess.Popen, base_dir: Path) -> dict:
        """The first trial's first run is reclaimed once it holds."""
        wait_for(lambda: (base_dir / "holding").exists(), "the first run holds")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        (worker.repo / "hold").unlink()  # the second trial runs to its end
        return {}

    worker.behaviours["-001"] = reclaimed
    worker.restart_reclaimed = lambda job: "-001-" in job
    tuning = create_tuning_job(world, maximum=2, parallel=1, spot=True)
    wait_for(lambda: tuning_job(world, tuning)["HyperParameterTuningJobStatus"] == "Completed", "the tuning job completes")
    done = tuning_job(world, tuning)
    first, second = trial_names(world, tuning)
    assert worker.restarted == [first]  # the second trial was not reclaimed: it ran once
    runs = {trial: sorted((worker.repo / "runs" / trial).iterdir()) for trial in (first, second)}
    assert [run.name for run in runs[first]] == ["0", "1"] and len(runs[second]) == 1
    assert runs[first][0].read_text() != runs[first][1].read_text()  # a new instance: a new base dir
    messages = log_messages(world, first)  # both runs' lines, in the trial's log (and only its lines)
    assert messages[0].startswith(f"run 0 of {first}") and "resuming at epoch 2" in messages
    assert any(m.startswith(f"run 1 of {first}") for m in messages) and not any("val_loss=0.4000" in m for m in messages)
    job = world["sagemaker"].describe_training_job(TrainingJobName=first)
    assert job["TrainingJobStatus"] == "Completed" and first not in fake_sagemaker.stop_requests
    summaries = {s["TrainingJobName"]: s for s in trials(world, tuning)}
    assert summaries[first]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == 0.3  # the restarted run's last line
    assert summaries[second]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == 0.4
    assert done["BestTrainingJob"]["TrainingJobName"] == first


def test_the_worker_stops_the_running_trial_of_a_stopped_tuning_job_and_does_not_restart_it(
    fake_sagemaker: FakeSageMaker, world: dict[str, Any], worker: Any
) -> None:
    (worker.repo / "hold").touch()
    worker.restart_reclaimed = lambda _job: True  # a stop is not a reclaim, even of a spot trial to restart
    tuning = create_tuning_job(world, maximum=3, parallel=1, spot=True)
    (trial,) = trial_names(world, tuning)
    wait_for(lambda: (worker.repo.parent / f"worker-{trial}" / "holding").exists(), "the trial runs")

    world["sagemaker"].stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)
    wait_for(lambda: tuning_job(world, tuning)["HyperParameterTuningJobStatus"] == "Stopped", "the tuning job stops")
    job = world["sagemaker"].describe_training_job(TrainingJobName=trial)
    assert job["TrainingJobStatus"] == "Stopped" and worker.restarted == []
    assert trial_names(world, tuning) == [trial]
    assert fake_sagemaker.stop_requests.count(trial) == 1
