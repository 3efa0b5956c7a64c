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
  its end; as SageMaker, an unknown job or one that has ended is refused with ValidationException;
* when a job ends, its FinalMetricDataList is read from its log streams (``<name>/...``) in moto's
  CloudWatch Logs (what the worker wrote there): each MetricDefinition's Regex (Python ``re``, group 1)
  on each line, the last value matched with its event's time; absent when nothing matched;
* CloudWatch Logs' FilterLogEvents honours logStreamNamePrefix (moto 5.2.5 ignores it and returns every
  stream's events), so a job's log follower reads that job's lines only, as on AWS;
* hyperparameter tuning jobs start trials, follow them and stop (tests/standins/fake_tuning.py). A trial
  is a training job as above, named ``<tuning job>-<NNN>-<8 hex>`` (NNN from 001), created with the
  definition's StaticHyperParameters, ``_tuning_objective_metric`` (the objective's name, as SageMaker
  adds it) and its tuned hyperparameters as strings, the definition's AlgorithmSpecification
  (TrainingImage, TrainingInputMode, MetricDefinitions), RoleArn, InputDataConfig, OutputDataConfig,
  ResourceConfig, StoppingCondition, CheckpointConfig, EnableManagedSpotTraining, Environment, VpcConfig,
  RetryStrategy and the tuning job's Tags; its description has TuningJobArn. Its end (:meth:`end`) scores
  it by the last value of the objective metric and starts the next trials.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
from typing import Any

import pytest
from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.logs.models import logs_backends
from moto.logs.responses import LogsResponse
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeTrainingJob, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from model_lib.sagemaker.jobs import LOG_GROUP, TERMINAL_STATUSES
from tests.standins.fake_tuning import FakeTuning

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


def log_events(job: FakeTrainingJob) -> list[tuple[int, str]]:
    """Return (timestamp in ms, message) of every event in ``job``'s log streams in moto's CloudWatch
    Logs (its account and region's), by time (in the order put among equal times)."""
    _, _, _, region, account, _ = job.arn.split(":", 5)
    group = logs_backends[account][region].groups.get(LOG_GROUP)
    streams = [s for name, s in list(group.streams.items()) if name.startswith(f"{job.training_job_name}/")] if group else []
    return sorted(((event.timestamp, event.message) for s in streams for event in list(s.events)), key=lambda e: e[0])


def filter_log_events_by_prefix(response: LogsResponse, original: Any) -> Any:
    """FilterLogEvents with logStreamNamePrefix honoured (``original``: moto's, which ignores it)."""
    param = response._get_param
    prefix, group = param("logStreamNamePrefix"), response.logs_backend.groups.get(param("logGroupName"))
    if not prefix or group is None or param("logStreamNames"):
        return original(response)
    names = [name for name in list(group.streams) if name.startswith(prefix)]
    if not names:  # moto would read no names as all of them
        return json.dumps({"events": [], "searchedLogStreams": []})
    arguments = [param(key) for key in ("startTime", "endTime", "limit", "nextToken", "filterPattern")]
    found = response.logs_backend.filter_log_events(param("logGroupName"), names, *arguments, param("interleaved", False))
    return json.dumps(dict(zip(("events", "nextToken", "searchedLogStreams"), found)))


def final_metrics(events: list[tuple[int, str]], definitions: list[dict[str, str]] | None) -> list[dict[str, Any]]:
    """Return the FinalMetricDataList of a job that logged ``events``: for each of the MetricDefinitions
    ``definitions`` that matched a line, the last value matched (its Regex's group 1) and that line's time."""
    found = []
    for definition in definitions or []:
        pattern, last = re.compile(definition["Regex"]), None
        for timestamp, message in events:
            match = pattern.search(message)
            try:
                last = (float(match.group(1)), timestamp) if match else last
            except (IndexError, TypeError, ValueError):  # no group 1, or not a number: not a value
                continue
        if last is not None:
            when = datetime.datetime.fromtimestamp(last[1] / 1000, tz=datetime.UTC)
            found.append({"MetricName": definition["Name"], "Value": last[0], "Timestamp": when})
    return found


class FakeSageMaker:
    """The training jobs created while installed, what ended them, and the stop requests received;
    :attr:`trials` names the tuning job of each trial, :attr:`tuning` holds the tuning jobs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # moto's server answers each request on its own thread
        self.jobs: dict[str, FakeTrainingJob] = {}
        self.artifacts: dict[str, dict[str, str]] = {}  # job name -> the ModelArtifacts moto made for it
        self.stop_requests: list[str] = []
        self.environments: dict[str, dict[str, str]] = {}  # job name -> the Environment it was created with
        self.trials: dict[str, str] = {}  # trial (training job) name -> the name of the tuning job that started it
        self.tuning = FakeTuning(self)

    def install(self, patch: pytest.MonkeyPatch) -> None:
        """Patch moto's SageMaker backend and responses with ``patch`` (undone when it is)."""
        create, describe = SageMakerModelBackend.create_training_job, SageMakerModelBackend.describe_training_job
        create_response, filter_events = SageMakerResponse.create_training_job, LogsResponse.filter_log_events

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
            self.request_stop(response.sagemaker_backend, response._get_param("TrainingJobName"))
            return EmptyResult()

        patch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        patch.setattr(SageMakerModelBackend, "describe_training_job", describe_training_job)
        patch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
        patch.setattr(SageMakerResponse, "create_training_job", keep_environment)
        patch.setattr(LogsResponse, "filter_log_events", lambda response: filter_log_events_by_prefix(response, filter_events))
        self.tuning.install(patch)

    def _advance(self, job: FakeTrainingJob) -> None:
        """Bring an InProgress job's secondary status up to now."""
        job.secondary_status_transitions = _steps(job.creation_time, utcnow(), ended=False)
        job.secondary_status = job.secondary_status_transitions[-1]["Status"]
        job.last_modified_time = job.secondary_status_transitions[-1]["StartTime"]
        started = len(job.secondary_status_transitions) > 1
        job.training_start_time = job.secondary_status_transitions[1]["StartTime"] if started else None

    def request_stop(self, backend: SageMakerModelBackend, name: str) -> None:
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
        (default ``seconds``) is what a spot job is billed. Its FinalMetricDataList is read from its log;
        a trial's tuning job then scores it and starts its next trials.

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
            metrics = final_metrics(log_events(job), job.algorithm_specification.get("MetricDefinitions"))
            job.final_metric_data_list = metrics or None
        if name in self.trials:
            self.tuning.trial_ended(name)
