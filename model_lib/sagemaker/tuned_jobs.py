"""Find the finished tuning trial that already trained a remote train stage's inputs.

After ``model-lib tune --apply-best`` wrote a tuning job's winner into params.yaml, the train stage
on SageMaker would train the very same thing again. Before it starts a job it asks here: among the
most recent completed tuning jobs, is there a best trial whose request equals the one the stage is
about to send (the same hyperparameters, channel inputs, image, instance type and count, spot, and
environment but for its run tags and the trial marker)? Then the stage re-attaches to that trial
and writes its model, as it re-attaches to a job of its own. Only what SageMaker describes is
compared; nothing is remembered locally, so a queued experiment finds the trial as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from model_lib.config import TrainConfig, from_mapping, to_dict
from model_lib.errors import ConfigError
from model_lib.sagemaker.environment import TUNING_JOB_ENV, user_hyperparameters
from model_lib.tracking.lineage import TAGS_ENV

logger = logging.getLogger(__name__)

RECENT_TUNING_JOBS = 10  # how many of the latest completed tuning jobs are looked at
_NOT_IDENTITY = (TAGS_ENV, TUNING_JOB_ENV)  # run tags (the parent run) and the trial marker


def _hyperparameters(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the train config ``values`` describe, nulls filled as the job fills them; None if not one."""
    try:
        return to_dict(from_mapping(TrainConfig, values, "hyperparameters"))
    except ConfigError:
        return None


def planned_identity(job: Any) -> dict[str, Any]:
    """Return what a trial must equal to have trained ``job`` (a :class:`launch.LaunchPlan`)."""
    from model_lib.sagemaker import launch

    options = job.options
    return {
        "hyperparameters": _hyperparameters(job.hyperparameters),
        "inputs": {name: launch.training_input(job, name)["s3_data"] for name in job.channels},
        "image": job.image_uri,
        "instance": [options.instance_type, options.instance_count, options.spot],
        "environment": {k: v for k, v in job.environment.items() if k not in _NOT_IDENTITY},
    }


def described_identity(described: Mapping[str, Any]) -> dict[str, Any]:
    """Return the same for a described training job (DescribeTrainingJob)."""
    resources = described.get("ResourceConfig") or {}
    environment = described.get("Environment") or {}
    return {
        "hyperparameters": _hyperparameters(user_hyperparameters(described.get("HyperParameters") or {})),
        "inputs": {
            channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri"]
            for channel in described.get("InputDataConfig", [])
        },
        "image": (described.get("AlgorithmSpecification") or {}).get("TrainingImage"),
        "instance": [
            resources.get("InstanceType"),
            resources.get("InstanceCount"),
            bool(described.get("EnableManagedSpotTraining")),
        ],
        "environment": {k: v for k, v in environment.items() if k not in _NOT_IDENTITY},
    }


def tuned_trial(job: Any, client: Any) -> tuple[str, str] | None:
    """Return (trial job name, tuning job name) of a recent completed tuning job's best trial that
    trained exactly ``job``, or None. A SageMaker that cannot be asked means None (a new job starts)."""
    wanted = planned_identity(job)
    if wanted["hyperparameters"] is None:
        return None
    try:
        listed = client.list_hyper_parameter_tuning_jobs(
            StatusEquals="Completed", SortBy="CreationTime", SortOrder="Descending", MaxResults=RECENT_TUNING_JOBS
        )
        for summary in listed.get("HyperParameterTuningJobSummaries", []):
            name = summary["HyperParameterTuningJobName"]
            described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
            best = (described.get("BestTrainingJob") or {}).get("TrainingJobName")
            if not best:
                continue
            trial = client.describe_training_job(TrainingJobName=best)
            if trial.get("TrainingJobStatus") == "Completed" and described_identity(trial) == wanted:
                return str(best), str(name)
    except Exception as exc:  # botocore: throttled, no permission to list tuning jobs
        logger.info("could not look for a tuning trial that trained these inputs: %s", exc)
    return None


__all__ = ["RECENT_TUNING_JOBS", "described_identity", "planned_identity", "tuned_trial"]
