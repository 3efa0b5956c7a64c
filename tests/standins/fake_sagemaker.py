"""moto's SageMaker training jobs made to live as SageMaker's do, for tests, in the pytest process.

moto reports every training job ``Completed`` the moment CreateTrainingJob is called, answers
StopTrainingJob with 500 (moto 5.2.5 does not implement it) and replaces a job's MetricDefinitions with
its own. :meth:`FakeSageMaker.install` patches moto's SageMaker backend classes, so the moto server
running in the pytest process (tests/conftest.py, reached by subprocesses through AWS_ENDPOINT_URL)
answers instead:

* from CreateTrainingJob the job is ``InProgress``, secondary status Starting, then Downloading, then
  Training by the time since CreationTime, without TrainingEndTime, ModelArtifacts, FailureReason or
  final metrics; its MetricDefinitions are the ones it was created with;
* :meth:`FakeSageMaker.end` (called by whatever runs the job, as SageMaker's workers would) ends it: the
  status, TrainingTimeInSeconds/BillableTimeInSeconds, TrainingEndTime, FailureReason when Failed, and
  ModelArtifacts only when Completed;
* ListTrainingJobs and its StatusEquals read that same status (it is the job's own attribute);
* DescribeTrainingJob returns the job's Environment as it was created (moto 5.2.5 drops it), so a
  job run from its description gets the variables the launcher set, as on SageMaker;
* StopTrainingJob is recorded in :attr:`FakeSageMaker.stop_requests` and the job is ``Stopping`` until
  its end; as SageMaker, an unknown job or one that has ended is refused with ValidationException.
"""

from __future__ import annotations

import copy
import datetime
import threading
from typing import Any

import pytest
from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeTrainingJob, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from model_lib.sagemaker.jobs import TERMINAL_STATUSES

STEPS = (
    ("Starting", "Preparing the instances for training"),
    ("Downloading", "Downloading input data"),
    ("Training", "Training image download completed. Training in progress."),
)
STEP_SECONDS = 1.0  # each of Starting and Downloading lasts this long, then Training until the end
MAX_FAILURE_REASON = 1024


def status_for_exit(exit_code: int) -> str:
    """The status SageMaker gives a job whose container exited with ``exit_code``: 0 Completed, 143
    (SIGTERM: a stop or a spot reclaim) Stopped, anything else Failed."""
    return "Completed" if exit_code == 0 else ("Stopped" if exit_code == 128 + 15 else "Failed")


def _step(status: str, message: str, start: datetime.datetime, end: datetime.datetime | None) -> dict[str, Any]:
    step: dict[str, Any] = {"Status": status, "StartTime": start, "StatusMessage": message}
    if end is not None:
        step["EndTime"] = end
    return step


def _steps(created: datetime.datetime, now: datetime.datetime, ended: bool) -> list[dict[str, Any]]:
    """Starting -> Downloading -> Training as far as ``now``; an ended job went through all three."""
    starts = [min(created + datetime.timedelta(seconds=i * STEP_SECONDS), now) for i in range(len(STEPS))]
    reached = len(STEPS) if ended else max(1, sum(start < now for start in starts))
    ends: list[datetime.datetime | None] = [*starts[1:reached], now if ended else None]
    return [_step(*STEPS[i], starts[i], ends[i]) for i in range(reached)]


class FakeSageMaker:
    """The training jobs created while installed, what ended them, and the stop requests received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # moto's server answers each request on its own thread
        self.jobs: dict[str, FakeTrainingJob] = {}
        self.artifacts: dict[str, dict[str, str]] = {}  # job name -> the ModelArtifacts moto made for it
        self.stop_requests: list[str] = []
        self.environments: dict[str, dict[str, str]] = {}  # job name -> the Environment it was created with

    def install(self, patch: pytest.MonkeyPatch) -> None:
        """Patch moto's SageMaker backend and responses with ``patch`` (undone when it is)."""
        create, describe = SageMakerModelBackend.create_training_job, SageMakerModelBackend.describe_training_job
        create_response = SageMakerResponse.create_training_job

        def keep_environment(response: SageMakerResponse) -> Any:
            environment = response._get_param("Environment")
            if environment:
                with self.lock:
                    self.environments[response._get_param("TrainingJobName")] = dict(environment)
            return create_response(response)

        def create_training_job(backend: SageMakerModelBackend, **request: Any) -> FakeTrainingJob:
            definitions = copy.deepcopy(request["algorithm_specification"].get("MetricDefinitions"))
            job = create(backend, **request)
            job.algorithm_specification.pop("MetricDefinitions")
            if definitions is not None:
                job.algorithm_specification["MetricDefinitions"] = definitions
            with self.lock:
                self.jobs[job.training_job_name], self.artifacts[job.training_job_name] = job, job.model_artifacts
                job.training_job_status = "InProgress"
                job.training_end_time = job.model_artifacts = job.final_metric_data_list = None
                self._advance(job)
            return job

        def describe_training_job(backend: SageMakerModelBackend, training_job_name: str) -> dict[str, Any]:
            with self.lock:
                job = backend.training_jobs.get(training_job_name)
                if job is not None and job.training_job_status == "InProgress":
                    self._advance(job)
                described = describe(backend, training_job_name)
                environment = self.environments.get(training_job_name)
            return {**described, "Environment": environment} if environment else described

        def stop_training_job(response: SageMakerResponse) -> EmptyResult:
            self._stop(response.sagemaker_backend, response._get_param("TrainingJobName"))
            return EmptyResult()

        patch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        patch.setattr(SageMakerModelBackend, "describe_training_job", describe_training_job)
        patch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
        patch.setattr(SageMakerResponse, "create_training_job", keep_environment)

    def _advance(self, job: FakeTrainingJob) -> None:
        """Bring an InProgress job's secondary status up to now."""
        job.secondary_status_transitions = _steps(job.creation_time, utcnow(), ended=False)
        job.secondary_status = job.secondary_status_transitions[-1]["Status"]
        job.last_modified_time = job.secondary_status_transitions[-1]["StartTime"]
        started = len(job.secondary_status_transitions) > 1
        job.training_start_time = job.secondary_status_transitions[1]["StartTime"] if started else None

    def _stop(self, backend: SageMakerModelBackend, name: str) -> None:
        """StopTrainingJob: record it; an InProgress job becomes Stopping. Raises ValidationError (an
        answer of moto's) for an unknown job or one that has ended."""
        with self.lock:
            job = backend.training_jobs.get(name)
            if job is None:
                arn = FakeTrainingJob.arn_formatter(name, backend.account_id, backend.region_name)
                raise ValidationError(f"Could not find training job '{arn}'.")
            if job.training_job_status in TERMINAL_STATUSES:
                status = job.training_job_status
                raise ValidationError(f"The request was rejected because the training job is in status {status}.")
            if job.training_job_status == "InProgress":
                self._advance(job)
                now = utcnow()
                job.secondary_status_transitions[-1]["EndTime"] = now
                job.secondary_status_transitions.append(_step("Stopping", "Stopping the training job", now, None))
                job.training_job_status = job.secondary_status = "Stopping"
                job.last_modified_time = now
            self.stop_requests.append(name)

    def end(
        self,
        name: str,
        status: str,
        *,
        seconds: float = 0.0,
        failure: str | None = None,
        exit_code: int | None = None,
        billable_seconds: float | None = None,
    ) -> None:
        """End job ``name`` with ``status`` after ``seconds`` of training, as SageMaker reports it;
        ``failure`` (or, without it, ``exit_code``) gives a Failed job's reason; ``billable_seconds``
        (default ``seconds``) is what a spot job is billed.

        Raises:
            ValueError: ``status`` is not a terminal status.
            KeyError: no job ``name`` was created while installed.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status: expected one of {TERMINAL_STATUSES}, got {status!r}")
        with self.lock:
            job, artifacts = self.jobs[name], self.artifacts[name]
            now, before = utcnow(), job.secondary_status_transitions
            steps = _steps(job.creation_time, now, ended=True)
            if status == "Completed":
                steps += [_step("Uploading", "Uploading generated training model", now, now)]
            elif status == "Failed":
                reason = (failure or f"AlgorithmError: training exited with code {exit_code}")[:MAX_FAILURE_REASON]
                job.failure_reason = reason
                steps += [_step("Failed", reason, now, now)]
            else:
                begun = before[-1]["StartTime"] if before[-1]["Status"] == "Stopping" else now
                steps[-1]["EndTime"] = max(begun, steps[-1]["StartTime"])
                steps += [_step("Stopping", "Stopping the training job", steps[-1]["EndTime"], now)]
            if status != "Failed":
                steps += [_step(status, f"Training job {status.lower()}", now, now)]
            job.secondary_status_transitions = steps
            job.training_job_status = job.secondary_status = status
            job.training_start_time = steps[1]["StartTime"]
            job.training_end_time = job.last_modified_time = now
            job.training_time_in_seconds = int(seconds)
            job.billable_time_in_seconds = int(seconds if billable_seconds is None else billable_seconds)
            job.model_artifacts = artifacts if status == "Completed" else None
