"""What ``model-lib tune`` does: start (or attach to) a SageMaker tuning job, follow it, record its
outcome in the MLflow parent run and, with ``--apply-best``, write the winner into params.yaml;
with ``--local``, the same search run here (:mod:`model_lib.sagemaker.tune_local`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from model_lib.errors import ModelLibError
from model_lib.sagemaker.options import LaunchOptions


def _report(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace, options: LaunchOptions, overrides: Mapping[str, str]) -> int:
    """Run ``model-lib tune`` with its parsed ``args``, job ``options`` and ``-S`` train ``overrides``;
    return the exit code (0: the tuning job completed, or was started / printed).

    Raises:
        ConfigError, SageMakerEnvironmentError: for a bad tune: section, option, or what launch checks.
        StillRunning: when following is interrupted (the tuning job goes on).
    """
    if args.local and (args.attach or args.dry_run):
        raise ModelLibError("--local runs the search here: it goes with neither --attach nor --dry-run")
    if args.attach and args.dry_run:
        raise ModelLibError("--attach follows a tuning job that was started: it does not go with --dry-run")
    if args.local:
        from model_lib.sagemaker import tune_local

        return tune_local.run(args, overrides, report=_report)
    import boto3

    session = boto3.Session()
    if args.attach:
        return _follow_and_finish(args, session, args.attach, parent_run_id=None)
    return _start(args, options, overrides, session)


def _start(args: argparse.Namespace, options: LaunchOptions, overrides: Mapping[str, str], session: Any) -> int:
    from model_lib.sagemaker import tune
    from model_lib.tracking.lineage import user_tags
    from model_lib.tuning import load_tune

    search, train, config = load_tune(args.params, overrides)
    user_tags()  # the job's tags: checked before anything is asked of AWS
    name = tune.tuning_job_name(options.job_name)
    tuning = tune.plan(search, config, options, session, name)
    if not args.dry_run and tune.environment_has_tracking():
        tuning.parent_run_id = tune.open_parent_run(name, search, train, tuning.job.tags)
    request = tune.start(tuning, session, dry_run=args.dry_run)
    if args.dry_run:
        print(json.dumps(request, indent=2, sort_keys=True, default=str))
        return 0
    spot = ", spot" if options.spot else ""
    parent = f", MLflow parent run {tuning.parent_run_id}" if tuning.parent_run_id else ""
    _report(
        f"tune: started tuning job {name} ({search.strategy}, {search.trials} trials, {search.max_parallel_jobs} at once, "
        f"{options.instance_type}{spot}{parent})"
    )
    if not (args.wait or args.apply_best):
        _report(f"  follow it: model-lib tune --attach {name} [--apply-best]")
        return 0
    return _follow_and_finish(args, session, name, tuning.parent_run_id)


def _follow_and_finish(args: argparse.Namespace, session: Any, name: str, parent_run_id: str | None) -> int:
    from model_lib.environ import seconds_from_env
    from model_lib.sagemaker import remote, tune

    poll = seconds_from_env(remote.POLL_SECONDS_ENV, remote.DEFAULT_POLL_SECONDS, positive=True)
    tune.describe(session, name)  # an unknown name fails here, in one line
    try:
        described = tune.follow(name, session, poll_seconds=poll, report=_report)
    except KeyboardInterrupt:
        raise remote.StillRunning(
            f"stopped following tuning job {name}; it keeps running. Follow it again: model-lib tune --attach {name}"
        ) from None
    best = tune.best_trial(described)
    objective = str(described["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"])
    summary = tune.summary_of(described, best)
    _report(f"tune: {name} {summary['status']}: {summary['trials_completed']} trials completed")
    if best is not None:
        _report(f"  best trial: {best.name}, {objective} {best.objective:.6g} ({best.shown()})")
    parent = parent_run_id or (tune.parent_run_of(session, best.name) if best is not None else None)
    if parent and tune.environment_has_tracking():
        tune.record_outcome(parent, summary, objective)
        _report(f"  MLflow: parent run {parent} (each trial's run is its child)")
    if args.apply_best:
        tune.apply_best(args.params, best, name, report=_report)
    return 0 if summary["status"] == "Completed" else 1
