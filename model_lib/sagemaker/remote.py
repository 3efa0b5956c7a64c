"""The DVC ``train`` stage, run on SageMaker: one process whether training is local or remote.

With ``MODEL_LIB_TRAIN_ON=sagemaker``, ``model-lib train`` (the stage's command) pushes the stage's
data deps to the S3 DVC remote, launches the job through :mod:`model_lib.sagemaker.launch` (options
from ``MODEL_LIB_LAUNCH_OPTIONS``), follows its status and logs, downloads ``model.tar.gz`` and
writes what a local train writes: ``models/model.keras``, ``models/history.json`` and the MLflow
run reference (the job's run, which ``evaluate`` then adds to). DVC sees the same command, params
and outputs either way, so dvc.lock, metrics, plots and experiments work unchanged.

Why an environment variable and not a param or a flag: where a stage runs is not part of the model.
A param would change the stage's params hash (and every experiment's), and a flag in dvc.yaml's
``cmd`` would make DVC rerun the stage when it changes; an environment variable does neither.

The job's name is derived from what it trains (hyperparameters, channel objects, image, instance
options), so running the stage again re-attaches to the job in flight or finished instead of
starting a second one; a failed or stopped job is retried under the next attempt number. Before a
first attempt, the best trial of a recent tuning job that trained exactly the same request
(:mod:`model_lib.sagemaker.tuned_jobs`: ``tune --apply-best`` wrote its values) is re-attached to instead. Ctrl-C
while following asks nothing of the job: it keeps running.

Attempts are named ``<base>-<n>`` and share the checkpoint prefix ``<base>``, so a later attempt
resumes from an earlier one's checkpoints and reopens its MLflow run. With ``--spot --spot-fallback``
a spot attempt that failed for lack of capacity, or waited in Starting longer than
``--spot-fallback-after`` (the follower stops it), is followed by an attempt on demand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_lib._io import atomic_path, check_output_file, write_json
from model_lib.config import TrainConfig
from model_lib.errors import ModelLibError, SageMakerEnvironmentError
from model_lib.redaction import redact
from model_lib.tracking.lineage import TAGS_ENV

if TYPE_CHECKING:
    from model_lib.sagemaker.launch import LaunchOptions, LaunchPlan

# A local `model-lib train` never imports this module (cli.train_on decides first), so editing it
# does not rerun the local train stage; jobs, launch and boto3 are still imported where they are used,
# so that `model-lib mlflow-sync` and the tests stay light.

logger = logging.getLogger(__name__)

OPTIONS_ENV = "MODEL_LIB_LAUNCH_OPTIONS"
POLL_SECONDS_ENV = "MODEL_LIB_POLL_SECONDS"  # how often the stage asks for the job's status
DEFAULT_POLL_SECONDS = 30.0


class RemoteJobFailed(ModelLibError):
    """The SageMaker job ended Failed or Stopped; the message holds its failure reason."""


class StillRunning(Exception):
    """Following was interrupted (Ctrl-C, SIGTERM); the job goes on. ``exit_code`` is 130."""

    exit_code = 130


def stage_data_deps(dvc_yaml: Path = Path("dvc.yaml"), stage: str = "train") -> list[str]:
    """Return the stage's deps that are data (not model_lib code), as listed in ``dvc_yaml``."""
    import yaml

    deps = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"][stage].get("deps", [])
    return [d for d in deps if isinstance(d, str) and not d.startswith("model_lib/")]


def push_inputs(targets: Sequence[str], remote: str, repo: Path = Path(".")) -> None:
    """``dvc push -r remote targets``: exactly the files the job reads.

    Raises:
        SageMakerEnvironmentError: if the push fails (its last lines are in the message).
    """
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc) if dvc.is_file() else "dvc", "push", "-r", remote, *targets]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        tail = redact("\n".join((result.stdout + result.stderr).strip().splitlines()[-5:]))
        raise SageMakerEnvironmentError(f"`{' '.join(command[1:])}` failed:\n{tail}")


def job_base_name(job: LaunchPlan) -> str:
    """Return the name stem of the job training ``job``'s inputs: same hyperparameters, channel
    objects, image, instance options and environment (tracking server, experiment, registered model,
    credentials secret), same stem. Lineage tags are left out: they follow from the rest; so are how
    long a warm pool keeps the instance (--keep-alive) and the spot fallback (--spot-fallback,
    --spot-fallback-after): a rerun with or without them re-attaches to the same job."""
    options = job.options
    identity = {
        "hyperparameters": job.hyperparameters,
        "channels": job.channels,
        "image": job.image_uri,
        "instance": [options.instance_type, options.instance_count, options.spot],
        "environment": {k: v for k, v in job.environment.items() if k != TAGS_ENV},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"model-lib-train-{digest}"


def _attempts(client: Any, base: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield each attempt's number and description, ``<base>-1`` onwards, asking for each name in turn
    (DescribeTrainingJob sees a job at once; ListTrainingJobs may not yet), up to the first that is not."""
    from model_lib.sagemaker import jobs

    attempt = 1
    while (described := jobs.describe(client, f"{base}-{attempt}")) is not None:
        yield attempt, described
        attempt += 1


def _latest_attempt(client: Any, base: str) -> tuple[int, dict[str, Any]] | None:
    """Return the last attempt number and its description, or None when there is none."""
    attempts = list(_attempts(client, base))
    return attempts[-1] if attempts else None


def fallback_reason(job: LaunchPlan, described: dict[str, Any]) -> str | None:
    """Return why the next attempt after ``described`` runs on demand (``"failed for capacity: <reason>"``,
    ``"was stopped in Starting (no capacity)"``), or None: only for a spot attempt of a job with
    --spot-fallback."""
    from model_lib.sagemaker import jobs

    if not (job.options.spot and job.options.spot_fallback):
        return None
    return jobs.spot_fallback_reason(described)


def attach_or_launch(
    job: LaunchPlan, boto_session: Any, report: Callable[[str], None] = print, *, fallback: str | None = None
) -> str:
    """Return the name of the job to follow: the one already training these inputs (running or
    finished), else a new one started now (the next attempt after a failed or stopped one, which
    resumes from the same checkpoint prefix; on demand when :func:`fallback_reason` says so, or
    ``fallback`` gives the reason the caller knows: it stopped the attempt in Starting)."""
    from botocore.exceptions import ClientError

    from model_lib.sagemaker import jobs, launch
    from model_lib.sagemaker.tuned_jobs import tuned_trial

    base = job_base_name(job)
    client = jobs.sagemaker_client(boto_session)
    found = _latest_attempt(client, base)
    if found is not None and found[1]["TrainingJobStatus"] not in jobs.RETRIED_STATUSES:
        name = found[1]["TrainingJobName"]
        report(f"train: SageMaker job {name} already trains these inputs ({found[1]['TrainingJobStatus']}): re-attaching")
        return str(name)
    if found is None and (tuned := tuned_trial(job, client)) is not None:  # `model-lib tune --apply-best`'s winner
        report(f"train: SageMaker job {tuned[0]}, the best trial of tuning job {tuned[1]}, trained these inputs: re-attaching")
        return tuned[0]
    attempt = found[0] + 1 if found is not None else 1
    if found is not None and fallback is None:
        fallback = fallback_reason(job, found[1])
    # On demand: the same base name and checkpoint prefix (the identity keeps --spot, the attempt does not).
    options = dataclasses.replace(job.options, spot=False, max_wait=None) if fallback else job.options
    named = dataclasses.replace(job, job_name=f"{base}-{attempt}", checkpoint_name=base, options=options)
    try:
        launch.start(named, boto_session)
    except ClientError:
        if jobs.describe(client, named.job_name) is None:
            raise
        # Another process (a second queued `dvc exp run`) started the same job a moment ago.
        report(f"train: SageMaker job {named.job_name} was just started by another process: re-attaching")
        return named.job_name
    if found is not None and fallback is not None:
        report(
            f"train: spot attempt {found[1]['TrainingJobName']} {fallback}; "
            f"attempt {named.job_name} runs on demand from the same checkpoints"
        )
    spot = ", spot" if named.options.spot else ""
    report(f"train: started SageMaker job {named.job_name} ({named.image_uri}, {job.options.instance_type}{spot})")
    return named.job_name


def follow(
    job_name: str,
    boto_session: Any,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    report: Callable[[str], None] = print,
    starting_bound: float | None = None,
) -> dict[str, Any]:
    """Report each status change and new log line of the job until it ends (or, with ``starting_bound``,
    until a spot job has been in secondary status Starting longer than that many seconds); return its
    description.

    Our policy on top of :func:`jobs.follow` (whose client retries as botocore's standard mode does):
    following is never a reason to touch the job. Ctrl-C, SIGTERM, or SageMaker not answering even
    after botocore's retries ends the following only; the stage re-attaches when run again.

    Raises:
        StillRunning: on Ctrl-C or SIGTERM while following, or when SageMaker could not be asked
            (the job is left running).
    """
    import signal

    from botocore.exceptions import BotoCoreError, ClientError

    from model_lib.sagemaker import jobs

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return jobs.follow(
            job_name,
            boto_session,
            poll_seconds=poll_seconds,
            on_status=report,
            on_log=lambda line: report(f"  | {redact(line)}"),  # the job's own log, shown here
            until=None if starting_bound is None else lambda described: jobs.waited_for_capacity(described, starting_bound),
        )
    except (BotoCoreError, ClientError) as exc:  # throttled past botocore's retries, network down, expired credentials
        raise StillRunning(
            f"could not ask SageMaker about job {job_name} ({exc}); it keeps running. Run the stage again to re-attach"
        ) from None
    except KeyboardInterrupt:
        raise StillRunning(
            f"stopped following SageMaker job {job_name}; it keeps running. Run the stage again to re-attach "
            f"(`dvc repro` or the same `dvc exp run`), or stop it: aws sagemaker stop-training-job --training-job-name {job_name}"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _model_archive(uri: str, boto_session: Any) -> dict[str, bytes]:
    """Return the model and its summary from the job's model.tar.gz.

    Raises:
        RemoteJobFailed: if the archive lacks either.
    """
    from model_lib.sagemaker import jobs

    wanted = {jobs.MODEL_FILE, jobs.SUMMARY_FILE}
    found = jobs.read_archive(uri, boto_session, wanted)
    missing = wanted - set(found)
    if missing:
        raise RemoteJobFailed(f"{uri} holds no {', '.join(sorted(missing))}")
    return found


def write_outputs(
    described: dict[str, Any], boto_session: Any, model: Path, history: Path, run_reference: Path
) -> dict[str, Any]:
    """Write the job's model, its summary (the history, without the test metrics evaluate writes,
    the run id and the seconds, as a local train writes it) and its MLflow run id where a local train
    writes them; return the summary."""
    from model_lib.lifecycle import stable_summary
    from model_lib.sagemaker import jobs
    from model_lib.tracking import file_md5, write_run_reference

    uri = described["ModelArtifacts"]["S3ModelArtifacts"]
    files = _model_archive(uri, boto_session)
    with atomic_path(model, suffix=".keras") as tmp:
        Path(tmp).write_bytes(files[jobs.MODEL_FILE])
    summary = json.loads(files[jobs.SUMMARY_FILE])
    summary.pop("test", None)
    summary["sagemaker_job"] = described["TrainingJobName"]
    write_json(history, stable_summary(summary))
    write_run_reference(run_reference, summary.get("run_id"), file_md5(model))
    return dict(summary)


def train(
    config: TrainConfig,
    options: LaunchOptions,
    boto_session: Any,
    *,
    model: Path,
    history: Path,
    run_reference: Path,
    cost: Path | None = None,
    dvc_yaml: Path = Path("dvc.yaml"),
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the train stage's work as a SageMaker job; return the job's summary. With ``cost``, what the
    job cost is written there as JSON (``cost_usd``, ``spot_saving_usd``, the price and its source; the
    figures are null for an instance type no price source knows).

    Raises:
        OutputError: if the model, history or run reference cannot be written here (before launch).
        SageMakerEnvironmentError: listing every problem found before launch (as `model-lib launch`).
        RemoteJobFailed: if the job ended Failed or Stopped (with its failure reason).
        StillRunning: if following was interrupted; the job keeps running.
    """
    from model_lib.sagemaker import launch

    for path in (model, history, run_reference, cost):  # not after the job has run (and been paid for)
        if path is not None:
            check_output_file(path, "the model")
    launch.check_before_anything(config, options)  # before any push: a bad option or a credential fails at once
    remote = launch.dvc_s3_remote(options.remote, options.repo)
    targets = stage_data_deps(dvc_yaml)
    report(f"train: dvc push -r {remote} {' '.join(targets)}")
    push_inputs(targets, remote, options.repo)
    job = launch.plan(config, dataclasses.replace(options, remote=remote), boto_session)
    described = _follow_attempts(job, boto_session, poll_seconds, report)
    if described["TrainingJobStatus"] != "Completed":
        reason = described.get("FailureReason") or "no reason given"
        raise RemoteJobFailed(
            f"SageMaker job {described['TrainingJobName']} {described['TrainingJobStatus']}: {reason}. "
            "Running the stage again starts a new attempt"
        )
    summary = write_outputs(described, boto_session, model, history, run_reference)
    spent = _report_cost(job, described, boto_session, summary.get("run_id"), report)
    if cost is not None:
        write_json(cost, spent)
    return summary


def _follow_attempts(job: LaunchPlan, boto_session: Any, poll_seconds: float, report: Callable[[str], None]) -> dict[str, Any]:
    """Attach to (or launch) the job's attempt and follow it to its end; with --spot-fallback, a spot
    attempt left in Starting too long is stopped, and one that ended for lack of capacity is followed by
    an attempt on demand; return the last attempt's description."""
    from model_lib.sagemaker import jobs

    bound = float(job.options.spot_fallback_after) if job.options.spot and job.options.spot_fallback else None
    fallback = None
    while True:
        name = attach_or_launch(job, boto_session, report, fallback=fallback)
        described = follow(name, boto_session, poll_seconds=poll_seconds, report=report, starting_bound=bound)
        fallback = None
        if described["TrainingJobStatus"] not in jobs.TERMINAL_STATUSES:  # a spot attempt in Starting past the bound
            report(f"train: spot attempt {name} waited in Starting over {bound:.0f} s for capacity: stopping it")
            jobs.stop(boto_session, name)
            described = follow(name, boto_session, poll_seconds=poll_seconds, report=report)
            if described["TrainingJobStatus"] == "Stopped":
                fallback = f"was stopped after {bound:.0f} s in Starting"
        if fallback is None and fallback_reason(job, described) is None:
            return described


def _earlier_attempts(job: LaunchPlan, described: dict[str, Any], boto_session: Any) -> list[dict[str, Any]]:
    """Return the descriptions of the ended attempts of ``job``'s inputs other than ``described``
    (a failed or reclaimed attempt is billed too)."""
    from model_lib.sagemaker import jobs

    client = jobs.sagemaker_client(boto_session)
    return [
        d
        for _, d in _attempts(client, job_base_name(job))
        if d["TrainingJobName"] != described["TrainingJobName"] and d["TrainingJobStatus"] in jobs.TERMINAL_STATUSES
    ]


def _report_cost(
    job: LaunchPlan, described: dict[str, Any], boto_session: Any, run_id: Any, report: Callable[[str], None]
) -> dict[str, Any]:
    """Report what training these inputs cost, this attempt and every earlier one (a spot attempt that a
    fallback followed, a failed one), and add it to the job's MLflow run (see
    :mod:`model_lib.sagemaker.cost`); return it as the stage's cost metrics."""
    from model_lib.sagemaker import launch
    from model_lib.sagemaker.cost import described_job_cost

    cost = described_job_cost(described, boto_session)
    name = described["TrainingJobName"]
    if cost is None:
        instance_type = described.get("ResourceConfig", {}).get("InstanceType")
        report(f"train: SageMaker job {name}: no price known for {instance_type}, cost not reported")
        return {"cost_usd": None, "spot_saving_usd": None, "trained_on": "sagemaker"}
    report(f"train: SageMaker job {name} cost {cost.describe()}")
    earlier = [c for c in (described_job_cost(d, boto_session) for d in _earlier_attempts(job, described, boto_session)) if c]
    if earlier:
        spent = sum(c.cost_usd for c in earlier)
        cost = dataclasses.replace(
            cost, cost_usd=cost.cost_usd + spent, spot_saving_usd=cost.spot_saving_usd + sum(c.spot_saving_usd for c in earlier)
        )
        report(f"train: with {len(earlier)} earlier attempt(s) of these inputs (${spent:.4f}): ${cost.cost_usd:.4f} in all")
    launch.log_cost(run_id, cost)
    return {
        **cost.metrics(),
        "attempts": len(earlier) + 1,
        "trained_on": "sagemaker",
        "instance": f"{cost.instance_count} x {cost.price.instance_type}",
        "usd_per_hour": cost.price.usd_per_hour,
        "price_source": f"{cost.price.source}, {cost.price.region}",
    }
