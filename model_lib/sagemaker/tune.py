"""Hyperparameter tuning on SageMaker (Automatic Model Tuning) around the Estimator ``launch`` builds.

``plan`` checks everything ``model-lib launch`` checks (through :func:`launch.plan`: channels pushed,
image in ECR, Terraform outputs, credentials) plus the ``tune:`` section and ``--max-cost`` for every
trial; ``start`` sends CreateHyperParameterTuningJob (or, for a dry run, returns it unsent); ``follow``
reports each trial as its status changes and the best so far; ``best_trial`` reads the winner.

What a user of SageMaker's tuner otherwise gets wrong is decided here once:

- the metric definitions are :func:`model_lib.epoch_lines.metric_definitions`, the regexes of the very
  lines training logs; the objective's last value is the kept (best) epoch's;
- spot trials: each trial keeps its checkpoints in a subfolder named after its job (see
  ``environment._checkpoint_dir``), so the definition's one checkpoint prefix serves every trial and a
  reclaimed trial resumes its own state in its own MLflow run;
- MLflow: one parent run for the tuning job, made here before the request; every trial's run carries
  its id as the ``mlflow.parentRunId`` tag (through MODEL_LIB_MLFLOW_TAGS), so MLflow groups them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
import typing
from collections.abc import Callable, Mapping
from typing import Any

from model_lib.config import TrainConfig
from model_lib.epoch_lines import metric_definitions
from model_lib.errors import ConfigError, ModelLibError, SageMakerEnvironmentError
from model_lib.sagemaker import launch
from model_lib.sagemaker.environment import TUNING_JOB_ENV, decode_hyperparameter
from model_lib.sagemaker.options import LaunchOptions
from model_lib.tracking.lineage import TAGS_ENV
from model_lib.tuning import ParameterRange, TuneConfig, max_epochs

logger = logging.getLogger(__name__)

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under the run it names
TUNING_JOB_TAG = "sagemaker.tuning_job_name"
TUNING_TERMINAL = ("Completed", "Failed", "Stopped")
MAX_NAME = 32  # SageMaker's limit on a tuning job's name (its trials are <name>-NNN-xxxxxxxx)
_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")


@dataclasses.dataclass
class TunePlan:
    """One checked tuning job: its name, the search, the trial template, and its MLflow parent run."""

    name: str
    tune: TuneConfig
    job: launch.LaunchPlan  # every trial is this job with the tuned values
    parent_run_id: str | None = None


def tuning_job_name(given: str | None) -> str:
    """Return ``given`` or ``model-lib-tune-<MMDDHHMMSS>``.

    Raises:
        ConfigError: for a name SageMaker refuses (1-32 letters, digits and '-').
    """
    name = given or f"model-lib-tune-{time.strftime('%m%d%H%M%S')}"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--job-name {name!r}: a tuning job's name is 1-{MAX_NAME} letters, digits and '-', not starting with '-'"
        )
    return name


def _not_for_tuning(options: LaunchOptions) -> list[tuple[str, str]]:
    """Return the launch flags given that a tuning job cannot honour, with why."""
    refused = []
    if options.spot_fallback:
        refused.append(("--spot-fallback", "SageMaker starts a tuning job's trials itself: none can be rerun on demand"))
    if options.keep_alive is not None:
        refused.append(("--keep-alive", "a tuning job's trials keep no warm pool"))
    if options.register_model:
        refused.append(
            ("--register-model", "every trial would register a version; register the best: `--apply-best`, then `dvc repro`")
        )
    return refused


def check_before_anything(tune: TuneConfig, config: TrainConfig, options: LaunchOptions) -> None:
    """Run the checks that need no AWS: launch's own (options, hyperparameters, tracking, secrets)
    and the whole tuning job's cost.

    Raises:
        SageMakerEnvironmentError: listing every problem found.
    """
    problems = options.cost_problems(trials=tune.trials)  # the whole tuning job, not one trial
    problems += [f"{flag}: {why}" for flag, why in _not_for_tuning(options)]
    problems += launch.local_problems(config, dataclasses.replace(options, max_cost=None))
    launch.raise_if_any(problems, "the tuning job")


def plan(tune: TuneConfig, config: TrainConfig, options: LaunchOptions, boto_session: Any, name: str) -> TunePlan:
    """Return the checked tuning job ``name`` for ``tune`` around the job ``launch`` would start for ``config``.

    Raises:
        SageMakerEnvironmentError: listing every problem, each with what to run.
    """
    check_before_anything(tune, config, options)
    job = launch.plan(config, dataclasses.replace(options, max_cost=None, job_name=name), boto_session)
    # One prefix for every trial (each keeps its own subfolder under it, named after its job).
    job = dataclasses.replace(job, checkpoint_name=f"tuning/{name}")
    return TunePlan(name=name, tune=tune, job=job)


def sdk_ranges(tune: TuneConfig) -> dict[str, Any]:
    """Return the tuner's hyperparameter ranges; categorical choices JSON-encoded, as the job decodes them."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    def one(r: ParameterRange) -> Any:
        if r.kind == "Categorical":
            return CategoricalParameter([json.dumps(v) for v in r.values])
        kind = IntegerParameter if r.kind == "Integer" else ContinuousParameter
        return kind(r.low, r.high, scaling_type=r.scaling)

    return {r.name: one(r) for r in tune.ranges}


def _trial_environment(job: launch.LaunchPlan, parent_run_id: str | None) -> dict[str, str]:
    """Return the trials' environment: the job's, with the parent run's id among the MLflow run tags."""
    environment = {**job.environment, TUNING_JOB_ENV: job.job_name}
    if parent_run_id:
        tags = json.loads(environment.get(TAGS_ENV) or "{}")
        environment[TAGS_ENV] = json.dumps({**tags, PARENT_RUN_TAG: parent_run_id, TUNING_JOB_TAG: job.job_name}, sort_keys=True)
    return environment


def build_tuner(tuning: TunePlan, session: Any, source_dir: str | None = None) -> Any:
    """Return the SDK v2 HyperparameterTuner for ``tuning``: the launch Estimator, our regexes, the ranges."""
    from sagemaker.tuner import HyperbandStrategyConfig, HyperparameterTuner, StrategyConfig

    tune = tuning.tune
    job = dataclasses.replace(tuning.job, environment=_trial_environment(tuning.job, tuning.parent_run_id))
    estimator = launch.build_estimator(job, session, source_dir=source_dir)
    strategy_config = None
    if tune.strategy == "Hyperband":
        most = max_epochs(job.hyperparameters)
        strategy_config = StrategyConfig(HyperbandStrategyConfig(min_resource=tune.min_epochs, max_resource=most))
    return HyperparameterTuner(
        estimator,
        objective_metric_name=tune.objective,
        hyperparameter_ranges=typing.cast(Any, sdk_ranges(tune)),
        metric_definitions=typing.cast(Any, metric_definitions()),
        strategy=tune.strategy,
        objective_type=tune.objective_type,
        max_jobs=typing.cast(Any, tune.max_jobs),  # None: Grid's size (SageMaker's own count)
        max_parallel_jobs=tune.max_parallel_jobs,
        early_stopping_type=tune.early_stopping,
        tags=[{"Key": k, "Value": v} for k, v in job.tags.items()],
        strategy_config=strategy_config,
    )


def start(tuning: TunePlan, boto_session: Any, *, dry_run: bool = False) -> dict[str, Any]:
    """Send CreateHyperParameterTuningJob for ``tuning`` and return the request as sent (``dry_run``:
    nothing is sent or uploaded; the code location is where the real start would upload ``entry_point/``)."""
    launch.quiet_sdk_config_logger()  # before the SDK's first import, which logs to stdout
    from sagemaker.inputs import TrainingInput

    from model_lib.sagemaker import channels as dvc_channels

    job = tuning.job
    session = launch.sdk_session(boto_session, job.bucket)
    planned_code = f"s3://{job.bucket}/code/{tuning.name}/source/sourcedir.tar.gz"
    tuner = build_tuner(tuning, session, source_dir=planned_code if dry_run else None)
    if not dry_run:
        dvc_channels.upload_manifests(job.bucket, job.channels, job.channel_members, boto_session.client("s3"))
    inputs = {name: TrainingInput(**launch.training_input(job, name)) for name in job.channels}
    answer = {"HyperParameterTuningJobArn": f"arn:aws:sagemaker:::hyper-parameter-tuning-job/{tuning.name} (dry run: not sent)"}
    # The tuner reads the estimator's model_data, which warns that no training job has run yet: true and
    # meaningless here (the trials are the jobs).
    estimator_logger = logging.getLogger("sagemaker.estimator")
    quiet = _WithoutMessage("No finished training job found associated with this estimator")
    estimator_logger.addFilter(quiet)
    request = launch.captured_requests(
        session.sagemaker_client, "CreateHyperParameterTuningJob", answer if dry_run else None, edit=_grid_counts_itself
    )
    try:
        with request as captured:
            tuner.fit(inputs=inputs, job_name=tuning.name, include_cls_metadata=False, wait=False)
    finally:
        estimator_logger.removeFilter(quiet)
    return captured[-1]


def _grid_counts_itself(params: dict[str, Any]) -> None:
    """Leave MaxNumberOfTrainingJobs out of a Grid request: SageMaker counts the combinations itself,
    and the SDK v2 sends None, which botocore refuses."""
    limits = params.get("HyperParameterTuningJobConfig", {}).get("ResourceLimits", {})
    if limits.get("MaxNumberOfTrainingJobs", 0) is None:
        del limits["MaxNumberOfTrainingJobs"]


class _WithoutMessage(logging.Filter):
    """Drops the log records whose message starts with ``start``."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trial as the tuning job lists it: name, status, tuned values (decoded), objective value."""

    name: str
    status: str
    values: dict[str, Any]
    objective: float | None

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Trial:
        final = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        tuned = {k: decode_hyperparameter(v) for k, v in (summary.get("TunedHyperParameters") or {}).items()}
        value = final.get("Value")
        objective = None if value is None else float(value)
        return cls(str(summary["TrainingJobName"]), str(summary["TrainingJobStatus"]), tuned, objective)

    def shown(self) -> str:
        return shown_values(self.values)


def shown_values(values: Mapping[str, Any]) -> str:
    """Return tuned values as a report shows them: ``batch_size=16, learning_rate=0.004``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def trials(client: Any, name: str) -> list[Trial]:
    """Return every trial of tuning job ``name`` (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
    found: list[Trial] = []
    request: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
    while True:
        page = client.list_training_jobs_for_hyper_parameter_tuning_job(**request)
        found.extend(Trial.from_summary(s) for s in page.get("TrainingJobSummaries", []))
        if not page.get("NextToken"):
            return sorted(found, key=lambda t: t.name)
        request["NextToken"] = page["NextToken"]


def best_trial(described: Mapping[str, Any]) -> Trial | None:
    """Return the tuning job's best trial (its BestTrainingJob), or None while no trial has completed."""
    best = described.get("BestTrainingJob")
    return Trial.from_summary(best) if best else None


def _objective_name(described: Mapping[str, Any]) -> str:
    return str(described["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"])


def follow(name: str, boto_session: Any, *, poll_seconds: float = 30.0, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Report each trial's status as it changes (its values; its objective once it ends) and each new
    best, until the tuning job ends; return its last description.

    Raises:
        botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: if SageMaker could not be asked.
    """
    from model_lib.sagemaker import jobs

    client = jobs.sagemaker_client(boto_session)
    seen: dict[str, str] = {}
    best_name, status = None, None
    while True:
        described = dict(client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name))
        objective = _objective_name(described)
        for trial in trials(client, name):
            if seen.get(trial.name) != trial.status:
                seen[trial.name] = trial.status
                score = f": {objective} {trial.objective:.6g}" if trial.objective is not None else ""
                report(f"{time.strftime('%H:%M:%S')} trial {trial.name} {trial.status} ({trial.shown()}){score}")
        best = best_trial(described)
        if best is not None and best.name != best_name:
            best_name = best.name
            report(f"  best so far: {best.name}, {objective} {best.objective:.6g} ({best.shown()})")
        if described["HyperParameterTuningJobStatus"] != status:
            status = described["HyperParameterTuningJobStatus"]
            report(f"{time.strftime('%H:%M:%S')} {name}: {status}")
        if status in TUNING_TERMINAL:
            return described
        time.sleep(poll_seconds)


def describe(boto_session: Any, name: str) -> dict[str, Any]:
    """Return DescribeHyperParameterTuningJob of ``name``.

    Raises:
        SageMakerEnvironmentError: if there is no such tuning job.
    """
    from botocore.exceptions import ClientError

    from model_lib.sagemaker import jobs

    try:
        return dict(jobs.sagemaker_client(boto_session).describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("ResourceNotFound", "ValidationException"):
            raise SageMakerEnvironmentError(f"tuning job {name!r}: not found ({code})") from None
        raise


def parent_run_of(boto_session: Any, trial_name: str) -> str | None:
    """Return the MLflow parent run a trial's runs were tagged with (from its Environment), or None."""
    from model_lib.sagemaker import jobs

    described = jobs.describe(jobs.sagemaker_client(boto_session), trial_name) or {}
    try:
        return json.loads((described.get("Environment") or {}).get(TAGS_ENV) or "{}").get(PARENT_RUN_TAG)
    except ValueError:
        return None


def summary_of(described: Mapping[str, Any], best: Trial | None) -> dict[str, Any]:
    """Return what the parent run records of the ended tuning job: status, counts, the best trial."""
    counters = described.get("TrainingJobStatusCounters") or {}
    summary: dict[str, Any] = {
        "status": described.get("HyperParameterTuningJobStatus"),
        "trials_completed": counters.get("Completed", 0),
        "trials_failed": counters.get("NonRetryableError", 0) + counters.get("RetryableError", 0),
        "trials_stopped": counters.get("Stopped", 0),
    }
    if best is not None:
        summary.update(best_trial=best.name, best_objective=best.objective, best_values=best.values)
    return summary


def environment_has_tracking() -> bool:
    """Whether this process tracks to MLflow (MLFLOW_TRACKING_URI set)."""
    return bool(os.environ.get(launch.TRACKING_URI_ENV))


def _range_text(r: ParameterRange) -> str:
    if r.kind == "Categorical":
        return f"one of {list(r.values)}"
    return f"{r.kind.lower()} {r.low}..{r.high}" + ("" if r.scaling == "Auto" else f" ({r.scaling})")


def parent_params(tune: TuneConfig, train: Mapping[str, Any]) -> dict[str, Any]:
    """Return the parent run's params: the search (strategy, objective, limits), each range, the base ``train:``."""
    params: dict[str, Any] = {
        "strategy": tune.strategy,
        "objective": f"{tune.objective} ({tune.objective_type})",
        "max_jobs": tune.trials,
        "max_parallel_jobs": tune.max_parallel_jobs,
        "early_stopping": tune.early_stopping,
    }
    params.update({f"range.{r.name}": _range_text(r) for r in tune.ranges})
    tuned = {r.name for r in tune.ranges}
    params.update({f"train.{k}": v for k, v in train.items() if k not in tuned})
    return params


def open_parent_run(name: str, tune: TuneConfig, train: Mapping[str, Any], tags: Mapping[str, str], wait: float = 30.0) -> str:
    """Create the tuning job's MLflow parent run (named ``name``; its search as params) and return its id.

    Raises:
        ConfigError: if the tracking server refused this process or did not answer within ``wait``
            seconds (nothing has been started: the trials could not be grouped under it).
    """
    from model_lib.tracking import open_tracker, public_uri

    tracker = open_tracker()
    tracker.set_tags({"mlflow.runName": name, TUNING_JOB_TAG: name, "model_lib.stage": "tune", **tags})
    tracker.log_params(parent_params(tune, train))
    if not tracker.flush(wait=wait) or tracker.run_id is None:
        uri = public_uri(os.environ.get(launch.TRACKING_URI_ENV, ""))
        raise ConfigError(
            f"MLflow at {uri} did not answer in {wait:.0f} s: the tuning job's parent run could not be made, so nothing "
            "was started; try again, or unset MLFLOW_TRACKING_URI to tune untracked"
        )
    return tracker.run_id


def record_outcome(parent_run_id: str, summary: Mapping[str, Any], objective: str) -> None:
    """Add the ended tuning job's outcome to its parent run and end it (FINISHED, or FAILED when no
    trial completed); never raises: the outcome was already printed."""
    from model_lib.tracking import open_tracker

    try:
        tracker = open_tracker(run_id=parent_run_id)
        metrics = {k: summary[k] for k in ("trials_completed", "trials_failed", "trials_stopped")}
        if summary.get("best_objective") is not None:
            metrics[f"best_{objective}"] = summary["best_objective"]
        tracker.log_metrics(metrics)
        if "best_trial" in summary:
            tracker.set_tags({"best_trial": str(summary["best_trial"])})
            tracker.log_params({f"best.{k}": v for k, v in summary["best_values"].items()})
        tracker.end("FINISHED" if "best_trial" in summary else "FAILED")
    except Exception as exc:  # tracking is never a reason to fail: the outcome was printed
        logger.warning("could not add the outcome to the parent run %s: %s", parent_run_id, exc)


def apply_best(params: str, best: Trial | None, name: str, *, report: Callable[[str], None] = print) -> None:
    """Write the best trial's values into ``params``'s train: and say what ``dvc repro`` does with it.

    Raises:
        ModelLibError: if no trial completed (the file is left as it was).
        ConfigError: if a value is one train: refuses (the file is left as it was).
    """
    from model_lib.tuning import apply_values

    if best is None:
        raise ModelLibError(f"--apply-best: tuning job {name} has no completed trial; {params} is unchanged")
    apply_values(params, best.values)
    shown = ", ".join(f"train.{k}={v}" for k, v in sorted(best.values.items()))
    report(f"tune: wrote {shown} into {params}; `dvc repro` (or `dvc exp run`) trains it")


__all__ = [
    "PARENT_RUN_TAG",
    "TUNING_JOB_TAG",
    "Trial",
    "TunePlan",
    "apply_best",
    "best_trial",
    "build_tuner",
    "check_before_anything",
    "describe",
    "follow",
    "open_parent_run",
    "parent_params",
    "parent_run_of",
    "plan",
    "record_outcome",
    "sdk_ranges",
    "shown_values",
    "start",
    "summary_of",
    "trials",
    "tuning_job_name",
]
