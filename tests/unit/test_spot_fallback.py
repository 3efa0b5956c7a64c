"""Warm pools (--keep-alive) and the spot fallback (--spot-fallback): what stays out of the job identity,
and which ends of a spot attempt send the next one on demand (the request: tests/integration/test_launch.py)."""

import datetime

import pytest

from model_lib.sagemaker.jobs import capacity_failure, never_left_starting, seconds_in_starting
from model_lib.sagemaker.launch import LaunchPlan
from model_lib.sagemaker.options import LaunchOptions

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def plan(**options) -> LaunchPlan:
    return LaunchPlan(
        job_name="model-lib-train-abc-1",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/model-lib-training:cpu-abc1234",
        role_arn="arn:aws:iam::123456789012:role/sm",
        bucket="model-lib-test",
        channels={"train": "s3://model-lib-test/dvc/files/md5/ab/cdef"},
        hyperparameters={"epochs": 2},
        environment={},
        tags={},
        options=LaunchOptions(**options),
    )


@pytest.mark.parametrize(
    "reason",
    [
        "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance type.",
        "InsufficientCapacityError: We currently do not have sufficient capacity for ml.p4d.24xlarge",
        "insufficient CAPACITY in the Availability Zone",
    ],
)
@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_spot_attempt_that_ended_for_lack_of_capacity_is_told_apart(status, reason):
    assert capacity_failure({"TrainingJobStatus": status, "FailureReason": reason}) == reason


@pytest.mark.parametrize(
    "described",
    [
        {"TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: training exited with code 1"},
        {"TrainingJobStatus": "Failed"},
        {"TrainingJobStatus": "Stopped", "FailureReason": None},
        {"TrainingJobStatus": "Completed", "FailureReason": "CapacityError: (a reason a completed job never has)"},
        {"TrainingJobStatus": "InProgress", "FailureReason": "CapacityError"},
    ],
)
def test_other_ends_are_not_capacity_failures(described):
    assert capacity_failure(described) is None


def test_a_job_stopped_before_it_left_starting_never_got_capacity():
    steps = [{"Status": status} for status in ("Starting", "Stopping", "Stopped")]
    assert never_left_starting({"TrainingJobStatus": "Stopped", "SecondaryStatusTransitions": steps})
    trained = [{"Status": status} for status in ("Starting", "Downloading", "Training", "Stopping", "Stopped")]
    assert not never_left_starting({"TrainingJobStatus": "Stopped", "SecondaryStatusTransitions": trained})
    assert not never_left_starting({"TrainingJobStatus": "Failed", "SecondaryStatusTransitions": steps[:1]})


def test_seconds_in_starting_count_from_the_starting_step_and_only_while_in_it():
    since = NOW - datetime.timedelta(seconds=90)
    starting = {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting", "CreationTime": since}
    steps = [{"Status": "Starting", "StartTime": since}]
    assert seconds_in_starting({**starting, "SecondaryStatusTransitions": steps}, NOW) == 90
    assert seconds_in_starting(starting, NOW) == 90  # no transitions yet: since the job was created
    assert seconds_in_starting({**starting, "SecondaryStatus": "Training"}, NOW) == 0
    assert seconds_in_starting({**starting, "TrainingJobStatus": "Stopping"}, NOW) == 0


def test_keep_alive_and_spot_fallback_stay_out_of_the_job_identity():
    from model_lib.sagemaker.remote import job_base_name

    spot = job_base_name(plan(spot=True))
    assert job_base_name(plan(spot=True, spot_fallback=True, spot_fallback_after=60)) == spot
    assert job_base_name(plan(keep_alive=600)) == job_base_name(plan())
    assert job_base_name(plan()) != spot  # what the instance is does name the job


def test_only_a_spot_attempt_of_a_job_with_spot_fallback_falls_back():
    from model_lib.sagemaker.remote import fallback_reason

    failed = {"TrainingJobStatus": "Failed", "FailureReason": "CapacityError: no capacity", "EnableManagedSpotTraining": True}
    assert fallback_reason(plan(spot=True, spot_fallback=True), failed) == "failed for capacity: CapacityError: no capacity"
    assert fallback_reason(plan(spot=True), failed) is None  # without --spot-fallback: as before
    assert fallback_reason(plan(spot=True, spot_fallback=True), {**failed, "EnableManagedSpotTraining": False}) is None
