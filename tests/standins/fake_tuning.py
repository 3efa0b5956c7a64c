"""moto's hyperparameter tuning jobs made to run trials as SageMaker's do, for tests (installed by
:meth:`tests.standins.fake_sagemaker.FakeSageMaker.install`, which documents what a trial is).

moto 5.2.5 stores CreateHyperParameterTuningJob and answers DescribeHyperParameterTuningJob with the
request echoed, status ``Completed`` and a made-up best training job, starts no training job, and has
neither ListTrainingJobsForHyperParameterTuningJob nor StopHyperParameterTuningJob. Patched:

* CreateHyperParameterTuningJob (one ``TrainingJobDefinition``; a list of them is refused) starts
  min(MaxParallelTrainingJobs, MaxNumberOfTrainingJobs) trials, each a training job created through
  moto's own CreateTrainingJob; each time a trial ends the next ones start, while fewer than
  MaxNumberOfTrainingJobs have and the tuning job is not stopping. As SageMaker, it refuses an
  objective metric its MetricDefinitions do not define;
* sampling: ``Random`` draws each range uniformly (``Logarithmic`` log-uniformly, ``ReverseLogarithmic``
  as 1 - a log-uniform value, integers inclusive, categorical values by uniform choice) from a
  ``random.Random`` seeded with the RandomSeed, else the tuning job's name, so a job samples the same
  values each time; ``Grid`` walks the Cartesian product of the categorical then the integer ranges in
  their order (MaxNumberOfTrainingJobs: the grid's size when absent; continuous ranges refused).
  ``Bayesian`` and ``Hyperband`` are sampled as ``Random`` here: nothing learns from earlier trials,
  and Hyperband stops none early (nor does TrainingJobEarlyStoppingType ``Auto``). A combination is
  never repeated while an unused one is left;
* DescribeHyperParameterTuningJob and ListHyperParameterTuningJobs: status ``InProgress`` while trials
  run or remain, ``Completed`` once all have ended (``Stopping``, then ``Stopped``, after a stop),
  TrainingJobStatusCounters (a Failed trial is a NonRetryableError; a Stopping one InProgress),
  ObjectiveStatusCounters (a trial's objective Succeeded when it Completed with the objective metric in
  its FinalMetricDataList, the last value matched; Pending while it runs; else Failed), BestTrainingJob
  (the best Completed trial by the objective, absent until there is one), HyperParameterTuningEndTime
  once ended, ConsumedResources (ResourceLimits.MaxRuntimeInSeconds is not enforced);
  the definition's StaticHyperParameters carry ``_tuning_objective_metric`` as SageMaker's do (the SDK's
  ``HyperparameterTuner.attach`` deletes it), a HyperParameterTuningResourceConfig of one instance type
  (what the SDK v2 sends) its ResourceConfig too (attach reads that), a Grid job's ResourceLimits its
  MaxNumberOfTrainingJobs;
* ListTrainingJobsForHyperParameterTuningJob: a HyperParameterTrainingJobSummary per trial, with
  StatusEquals, SortBy (Name, CreationTime, Status, FinalObjectiveMetricValue: trials without one
  last), SortOrder, MaxResults (default 10, as SageMaker's) and NextToken;
* StopHyperParameterTuningJob: the tuning job is ``Stopping``, each InProgress trial gets a
  StopTrainingJob (:attr:`FakeSageMaker.stop_requests`), no trial starts any more; an unknown or ended
  tuning job is refused with ValidationException.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import itertools
import math
import random
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ResourceNotFound, ValidationError
from moto.sagemaker.models import HyperParameterTuningJob, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from model_lib.sagemaker.environment import TUNING_OBJECTIVE_HYPERPARAMETER

if TYPE_CHECKING:
    from tests.standins.fake_sagemaker import FakeSageMaker

RANDOM_STRATEGIES = ("Random", "Bayesian", "Hyperband")  # all sampled at random by this fake
RUNNING = ("InProgress", "Stopping")
SAMPLE_ATTEMPTS = 100  # draws before a repeated combination is replaced by an unused one
MAX_ENUMERATED = 100_000  # a discrete space up to this size is listed to find its unused combinations
DEFAULT_MAX_RESULTS = 10  # ListTrainingJobsForHyperParameterTuningJob's default page, as SageMaker's
SORT_KEYS = ("Name", "CreationTime", "Status", "FinalObjectiveMetricValue")


def decimal_string(value: float) -> str:
    """Return ``value`` as a plain decimal string, as SageMaker sends a continuous hyperparameter (no exponent)."""
    return format(decimal.Decimal(repr(value)), "f")


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _continuous(spec: dict[str, str], rng: random.Random) -> str:
    low, high, scaling = float(spec["MinValue"]), float(spec["MaxValue"]), spec.get("ScalingType", "Auto")
    if scaling == "Logarithmic":
        value = _log_uniform(rng, low, high)
    elif scaling == "ReverseLogarithmic":  # dense near 1: 1 - a log-uniform value in (1 - high, 1 - low]
        value = 1.0 - _log_uniform(rng, 1.0 - high, 1.0 - low)
    else:
        value = rng.uniform(low, high)
    return decimal_string(min(max(value, low), high))


def _integer(spec: dict[str, str], rng: random.Random) -> str:
    low, high = int(spec["MinValue"]), int(spec["MaxValue"])
    if spec.get("ScalingType") == "Logarithmic":  # each integer k with weight log((k + 1) / k)
        return str(min(int(_log_uniform(rng, low, high + 1)), high))
    return str(rng.randint(low, high))


def _integer_values(spec: dict[str, str]) -> list[str]:
    return [str(v) for v in range(int(spec["MinValue"]), int(spec["MaxValue"]) + 1)]


@dataclasses.dataclass(frozen=True)
class Ranges:
    """A ParameterRanges: each kind's ranges, in the order given."""

    continuous: list[dict[str, str]]
    integer: list[dict[str, str]]
    categorical: list[dict[str, Any]]

    @classmethod
    def of(cls, ranges: dict[str, Any] | None) -> Ranges:
        ranges = ranges or {}
        return cls(*(ranges.get(f"{kind}ParameterRanges") or [] for kind in ("Continuous", "Integer", "Categorical")))

    def sample(self, rng: random.Random) -> dict[str, str]:
        """Return one combination drawn at random (see the module docstring)."""
        drawn = {spec["Name"]: _continuous(spec, rng) for spec in self.continuous}
        drawn.update({spec["Name"]: _integer(spec, rng) for spec in self.integer})
        drawn.update({spec["Name"]: str(rng.choice(spec["Values"])) for spec in self.categorical})
        return drawn

    def size(self) -> int | None:
        """Return how many combinations there are, None when a continuous range makes them endless."""
        if self.continuous:
            return None
        sizes = [len(spec["Values"]) for spec in self.categorical]
        sizes += [int(spec["MaxValue"]) - int(spec["MinValue"]) + 1 for spec in self.integer]
        return math.prod(sizes)

    def grid(self) -> list[dict[str, str]]:
        """Return every combination: the Cartesian product of the categorical, then the integer ranges."""
        names = [spec["Name"] for spec in (*self.categorical, *self.integer)]
        values = [[str(v) for v in spec["Values"]] for spec in self.categorical]
        values += [_integer_values(spec) for spec in self.integer]
        return [dict(zip(names, combination)) for combination in itertools.product(*values)]

    def check(self, strategy: str) -> None:
        """Raises ValidationError (moto's) for ranges SageMaker refuses, or that ``strategy`` cannot walk."""
        if strategy == "Grid" and self.continuous:
            raise ValidationError("The Grid strategy does not support ContinuousParameterRanges.")
        for spec in (*self.continuous, *self.integer):
            low, high = float(spec["MinValue"]), float(spec["MaxValue"])
            scaling = spec.get("ScalingType", "Auto")
            logarithmic = scaling == "Logarithmic" and low <= 0
            if low > high or logarithmic or (scaling == "ReverseLogarithmic" and not 0 <= low < high < 1):
                raise ValidationError(f"Hyperparameter {spec['Name']!r}: range {low}..{high} is not valid for {scaling} scaling.")


def _key(combination: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(combination.items()))


class Sampler:
    """The tuned hyperparameters of a tuning job's trials, one combination per trial, never repeated
    while an unused one is left."""

    def __init__(self, strategy: str, ranges: Ranges, seed: object) -> None:
        self.ranges = ranges
        self.rng = random.Random(str(seed))
        self.walk = ranges.grid() if strategy == "Grid" else None
        self.used: set[tuple[tuple[str, str], ...]] = set()
        self.count = 0

    def next(self) -> dict[str, str]:
        """Return the next trial's combination."""
        if self.walk is not None:
            chosen = self.walk[self.count % len(self.walk)]
        else:
            chosen = self._draw()
        self.count += 1
        self.used.add(_key(chosen))
        return dict(chosen)

    def _draw(self) -> dict[str, str]:
        drawn = self.ranges.sample(self.rng)
        for _ in range(SAMPLE_ATTEMPTS):
            if _key(drawn) not in self.used:
                return drawn
            drawn = self.ranges.sample(self.rng)
        size = self.ranges.size()
        if size is None or size > MAX_ENUMERATED:
            return drawn
        unused = [c for c in self.ranges.grid() if _key(c) not in self.used]
        return self.rng.choice(unused) if unused else drawn


@dataclasses.dataclass
class TuningRecord:
    """What the fake keeps of a tuning job: its request, its sampler and its trials."""

    name: str
    backend: SageMakerModelBackend
    stored: HyperParameterTuningJob  # moto's own, whose attributes DescribeHyperParameterTuningJob reads
    definition: dict[str, Any]  # the TrainingJobDefinition as requested
    objective: dict[str, str] | None  # {"Type", "MetricName"}
    sampler: Sampler
    limit: int  # how many trials it starts in all
    parallel: int
    trials: list[str] = dataclasses.field(default_factory=list)  # in the order started
    tuned: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # trial -> its tuned hyperparameters
    objectives: dict[str, float] = dataclasses.field(default_factory=dict)  # Completed trial -> its objective value
    stopping: bool = False
    ended: datetime.datetime | None = None
    modified: datetime.datetime = dataclasses.field(default_factory=utcnow)


def _objective(config: dict[str, Any], definition: dict[str, Any]) -> dict[str, str] | None:
    return definition.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")


def _check_request(config: dict[str, Any], definition: dict[str, Any] | None, definitions: Any) -> Ranges:
    """Return the request's ranges; raises ValidationError (moto's) for a request the fake (or SageMaker) refuses."""
    if definition is None or definitions:
        raise ValidationError("The fake SageMaker runs tuning jobs of one TrainingJobDefinition only.")
    strategy = config.get("Strategy", "Bayesian")
    if strategy not in (*RANDOM_STRATEGIES, "Grid"):
        raise ValidationError(f"Strategy {strategy!r} is not one of {', '.join((*RANDOM_STRATEGIES, 'Grid'))}.")
    if strategy != "Grid" and not config.get("ResourceLimits", {}).get("MaxNumberOfTrainingJobs"):
        raise ValidationError(f"The fake SageMaker needs ResourceLimits.MaxNumberOfTrainingJobs for strategy {strategy}.")
    ranges = Ranges.of(definition.get("HyperParameterRanges") or config.get("ParameterRanges"))
    ranges.check(strategy)
    objective = _objective(config, definition)
    spec = definition.get("AlgorithmSpecification", {})
    names = {metric["Name"] for metric in spec.get("MetricDefinitions") or []}
    if objective and "TrainingImage" in spec and objective.get("MetricName") not in names:
        raise ValidationError(
            "A metric is required for this hyperparameter tuning job objective. Provide a metric in the metric definitions."
        )
    return ranges


def _resource_config(definition: dict[str, Any]) -> dict[str, Any]:
    if "ResourceConfig" in definition:
        return copy.deepcopy(definition["ResourceConfig"])
    tuning = definition.get("HyperParameterTuningResourceConfig", {})
    return {key: tuning[key] for key in ("InstanceType", "InstanceCount", "VolumeSizeInGB") if key in tuning}


class FakeTuning:
    """The tuning jobs created while installed (:attr:`jobs`, by name) and the trials they start."""

    def __init__(self, fake: FakeSageMaker) -> None:
        self.fake = fake
        # Taken before the fake's lock, never while holding it: a trial starts with CreateTrainingJob
        # (which takes the fake's lock) from a request thread or from FakeSageMaker.end.
        self.lock = threading.RLock()
        self.jobs: dict[str, TuningRecord] = {}

    def install(self, patch: pytest.MonkeyPatch) -> None:
        """Patch moto's SageMaker backend and responses with ``patch`` (undone when it is)."""
        create = SageMakerModelBackend.create_hyper_parameter_tuning_job
        describe = SageMakerModelBackend.describe_hyper_parameter_tuning_job
        list_jobs = SageMakerModelBackend.list_hyper_parameter_tuning_jobs

        def create_tuning_job(backend: SageMakerModelBackend, **request: Any) -> str:
            config, definition = request["hyper_parameter_tuning_job_config"], request["training_job_definition"]
            ranges = _check_request(config, definition, request.get("training_job_definitions"))
            arn = create(backend, **request)
            self._start(backend, backend.hyper_parameter_tuning_jobs[request["hyper_parameter_tuning_job_name"]], ranges)
            return arn

        def describe_tuning_job(backend: SageMakerModelBackend, hyper_parameter_tuning_job_name: str) -> dict[str, Any]:
            with self.lock:
                if hyper_parameter_tuning_job_name in self.jobs:
                    self._refresh(self.jobs[hyper_parameter_tuning_job_name])
                return describe(backend, hyper_parameter_tuning_job_name)

        def list_tuning_jobs(backend: SageMakerModelBackend, *args: Any, **kwargs: Any) -> Any:
            with self.lock:
                for record in self.jobs.values():
                    self._refresh(record)
                return list_jobs(backend, *args, **kwargs)

        def list_trials(response: SageMakerResponse) -> ActionResult:
            return ActionResult(self.list_trials(response.sagemaker_backend, response._get_param))

        def stop_tuning_job(response: SageMakerResponse) -> EmptyResult:
            self.stop(response.sagemaker_backend, response._get_param("HyperParameterTuningJobName"))
            return EmptyResult()

        patch.setattr(SageMakerModelBackend, "create_hyper_parameter_tuning_job", create_tuning_job)
        patch.setattr(SageMakerModelBackend, "describe_hyper_parameter_tuning_job", describe_tuning_job)
        patch.setattr(SageMakerModelBackend, "list_hyper_parameter_tuning_jobs", list_tuning_jobs)
        patch.setattr(SageMakerResponse, "list_training_jobs_for_hyper_parameter_tuning_job", list_trials, raising=False)
        patch.setattr(SageMakerResponse, "stop_hyper_parameter_tuning_job", stop_tuning_job, raising=False)

    def _start(self, backend: SageMakerModelBackend, stored: HyperParameterTuningJob, ranges: Ranges) -> None:
        """Keep a new tuning job (its echoed definition and limits as SageMaker describes them) and start its first trials."""
        config, requested = stored.hyper_parameter_tuning_job_config, stored.training_job_definition
        strategy = config.get("Strategy", "Bayesian")
        sampler = Sampler(strategy, ranges, config.get("RandomSeed", stored.hyper_parameter_tuning_job_name))
        limits = config["ResourceLimits"]
        limit = limits.get("MaxNumberOfTrainingJobs") or len(sampler.walk or ())
        if sampler.walk is not None:
            limits.setdefault("MaxNumberOfTrainingJobs", len(sampler.walk))
            limit = min(limit, len(sampler.walk))
        objective = _objective(config, requested)
        echoed = copy.deepcopy(requested)
        if "InstanceType" in echoed.get("HyperParameterTuningResourceConfig", {}):
            echoed.setdefault("ResourceConfig", _resource_config(echoed))  # what the SDK's attach reads
        if objective:
            echoed.setdefault("StaticHyperParameters", {})[TUNING_OBJECTIVE_HYPERPARAMETER] = objective["MetricName"]
        stored.training_job_definition = echoed
        parallel = min(int(limits["MaxParallelTrainingJobs"]), limit)
        name = stored.hyper_parameter_tuning_job_name
        record = TuningRecord(name, backend, stored, copy.deepcopy(echoed), objective, sampler, limit, parallel)
        with self.lock:
            self.jobs[record.name] = record
            self._start_trials(record)
            self._refresh(record)

    def _statuses(self, record: TuningRecord) -> dict[str, str]:
        with self.fake.lock:
            return {trial: self.fake.jobs[trial].training_job_status for trial in record.trials}

    def _start_trials(self, record: TuningRecord) -> None:
        """Start trials while fewer than ``parallel`` run and fewer than ``limit`` have started, unless stopping."""
        running = sum(status in RUNNING for status in self._statuses(record).values())
        while not record.stopping and len(record.trials) < record.limit and running < record.parallel:
            self._start_trial(record)
            running += 1

    def _start_trial(self, record: TuningRecord) -> None:
        """Create the next trial through moto's CreateTrainingJob (as the fake patches it)."""
        definition = record.definition
        name = f"{record.name}-{len(record.trials) + 1:03d}-{uuid.uuid4().hex[:8]}"
        tuned = record.sampler.next()
        spec = definition["AlgorithmSpecification"]
        keys = ("TrainingImage", "AlgorithmName", "TrainingInputMode", "MetricDefinitions")
        with self.fake.lock:  # before the job exists: the worker takes a trial it knows, with its Environment
            self.fake.trials[name] = record.name
            if definition.get("Environment"):
                self.fake.environments[name] = dict(definition["Environment"])
        job = record.backend.create_training_job(
            training_job_name=name,
            hyper_parameters={**definition.get("StaticHyperParameters", {}), **tuned},
            algorithm_specification={key: copy.deepcopy(spec[key]) for key in keys if key in spec},
            role_arn=definition["RoleArn"],
            input_data_config=copy.deepcopy(definition.get("InputDataConfig")),
            output_data_config=copy.deepcopy(definition["OutputDataConfig"]),
            resource_config=_resource_config(definition),
            vpc_config=copy.deepcopy(definition.get("VpcConfig")),
            stopping_condition=copy.deepcopy(definition.get("StoppingCondition")),
            tags=copy.deepcopy(record.stored.tags),
            enable_network_isolation=definition.get("EnableNetworkIsolation", False),
            enable_inter_container_traffic_encryption=definition.get("EnableInterContainerTrafficEncryption", False),
            enable_managed_spot_training=definition.get("EnableManagedSpotTraining", False),
            checkpoint_config=copy.deepcopy(definition.get("CheckpointConfig")),
            debug_hook_config=None,
            debug_rule_configurations=None,
            tensor_board_output_config=None,
            experiment_config=None,
        )
        with self.fake.lock:
            job.tuning_job_arn = record.stored.arn  # DescribeTrainingJob's TuningJobArn
            job.retry_strategy = copy.deepcopy(definition.get("RetryStrategy"))
        record.trials.append(name)
        record.tuned[name] = tuned
        record.modified = utcnow()

    def trial_ended(self, trial: str) -> None:
        """Record how trial ``trial`` ended (its objective, from its FinalMetricDataList) and start the next trials."""
        with self.lock:
            record = self.jobs[self.fake.trials[trial]]
            with self.fake.lock:
                job = self.fake.jobs[trial]
                metrics = {metric["MetricName"]: metric["Value"] for metric in job.final_metric_data_list or []}
                completed = job.training_job_status == "Completed"
            if completed and record.objective and record.objective["MetricName"] in metrics:
                record.objectives[trial] = metrics[record.objective["MetricName"]]
            record.modified = utcnow()
            self._start_trials(record)
            self._refresh(record)

    def _objective_status(self, record: TuningRecord, trial: str, status: str) -> str:
        return "Succeeded" if trial in record.objectives else ("Pending" if status in RUNNING else "Failed")

    def _refresh(self, record: TuningRecord) -> None:
        """Bring moto's stored tuning job (what Describe/ListHyperParameterTuningJobs read) up to its trials."""
        statuses = self._statuses(record)
        count = [*statuses.values()].count
        running = count("InProgress") + count("Stopping")
        if record.stopping:
            status = "Stopping" if running else "Stopped"
        else:
            status = "InProgress" if running or len(record.trials) < record.limit else "Completed"
        if status in ("Completed", "Stopped") and record.ended is None:
            record.ended = record.modified = utcnow()
        objectives = [self._objective_status(record, trial, s) for trial, s in statuses.items()]
        stored = record.stored
        stored.hyper_parameter_tuning_job_status = status
        stored.training_job_status_counters = {
            "Completed": count("Completed"),
            "InProgress": running,
            "RetryableError": 0,
            "NonRetryableError": count("Failed"),
            "Stopped": count("Stopped"),
        }
        stored.objective_status_counters = {key: objectives.count(key) for key in ("Succeeded", "Pending", "Failed")}
        stored.best_training_job = self._best(record)
        stored.hyper_parameter_tuning_end_time = record.ended
        stored.last_modified_time = record.modified
        stored.consumed_resources = {"RuntimeInSeconds": int(((record.ended or utcnow()) - stored.creation_time).total_seconds())}
        # moto's made-up values, which SageMaker does not send for such a job
        stored.OverallBestTrainingJob = stored.tuning_job_completion_details = stored.failure_reason = None

    def _best(self, record: TuningRecord) -> dict[str, Any] | None:
        if not record.objectives or record.objective is None:
            return None
        pick = max if record.objective["Type"] == "Maximize" else min
        best = pick(record.objectives, key=record.objectives.__getitem__)  # the first trial among equals
        return self.summary(record, best)

    def summary(self, record: TuningRecord, trial: str) -> dict[str, Any]:
        """Return trial ``trial``'s HyperParameterTrainingJobSummary."""
        with self.fake.lock:
            job = self.fake.jobs[trial]
            status = job.training_job_status
            summary = {
                "TrainingJobName": trial,
                "TrainingJobArn": job.arn,
                "TuningJobName": record.name,
                "CreationTime": job.creation_time,
                "TrainingStartTime": job.training_start_time,
                "TrainingEndTime": job.training_end_time,
                "TrainingJobStatus": status,
                "TunedHyperParameters": dict(record.tuned[trial]),
                "FailureReason": getattr(job, "failure_reason", None) if status == "Failed" else None,
                "ObjectiveStatus": self._objective_status(record, trial, status),
            }
        if trial in record.objectives and record.objective is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {**record.objective, "Value": record.objectives[trial]}
        return {key: value for key, value in summary.items() if value is not None}

    def list_trials(self, backend: SageMakerModelBackend, param: Any) -> dict[str, Any]:
        """ListTrainingJobsForHyperParameterTuningJob (``param``: the request's parameter by name).

        Raises ResourceNotFound (moto's) for an unknown tuning job."""
        name = param("HyperParameterTuningJobName")
        if name not in backend.hyper_parameter_tuning_jobs:
            raise ResourceNotFound(f"Could not find hyper parameter tuning job '{name}'.")
        sort_by, descending = param("SortBy") or "Name", param("SortOrder") == "Descending"
        if sort_by not in SORT_KEYS:
            raise ValidationError(f"Value '{sort_by}' at 'sortBy' is not one of {', '.join(SORT_KEYS)}")
        with self.lock:
            record = self.jobs.get(name)
            summaries = [self.summary(record, trial) for trial in record.trials] if record else []
        if param("StatusEquals"):
            summaries = [s for s in summaries if s["TrainingJobStatus"] == param("StatusEquals")]
        summaries = _sorted(summaries, sort_by, descending)
        start, size = int(param("NextToken") or 0), int(param("MaxResults") or DEFAULT_MAX_RESULTS)
        page = {"TrainingJobSummaries": summaries[start : start + size]}
        if start + size < len(summaries):
            page["NextToken"] = str(start + size)
        return page

    def stop(self, backend: SageMakerModelBackend, name: str) -> None:
        """StopHyperParameterTuningJob: ``Stopping``, a stop request for each InProgress trial, no trial
        started any more. Raises ValidationError (moto's) for an unknown tuning job or one that has ended."""
        with self.lock:
            record = self.jobs.get(name)
            if record is None:
                raise ValidationError(f"Could not find hyper parameter tuning job '{name}'.")
            self._refresh(record)
            status = record.stored.hyper_parameter_tuning_job_status
            if status != "InProgress":
                raise ValidationError(f"The request was rejected because the hyperparameter tuning job is in status {status}.")
            record.stopping, record.modified = True, utcnow()
            for trial, trial_status in self._statuses(record).items():
                if trial_status == "InProgress":
                    self.fake.request_stop(backend, trial)
            self._refresh(record)


def _sorted(summaries: list[dict[str, Any]], sort_by: str, descending: bool) -> list[dict[str, Any]]:
    """Return ``summaries`` by ``sort_by``; for FinalObjectiveMetricValue, those without one come last either way."""
    if sort_by != "FinalObjectiveMetricValue":
        field = {"Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus"}[sort_by]
        return sorted(summaries, key=lambda s: s[field], reverse=descending)
    scored = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
    scored.sort(key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"], reverse=descending)
    return scored + [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" not in s]
