"""``model-lib tune --local``: a tuning config tried here before it is paid for (SageMaker's tuner has
no local mode, sagemaker-python-sdk#1960).

Each trial is one ``model-lib sagemaker-local`` run (the real toolkit and entry point, as a
SageMaker trial) with the trial's values as ``-S train.<key>=<value>``, one after another. Grid
walks its combinations in order; every other strategy draws at random (Bayesian's and Hyperband's
models are SageMaker's), seeded by ``train.seed``. A trial's objective is read from its output with
the same regexes the SageMaker tuning job gets. The MLflow layout is the cloud one: a parent run for
the search, each trial's run its child. ``<base-dir>/<name>/results.json`` lists every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from model_lib._io import write_json
from model_lib.epoch_lines import read_metric
from model_lib.errors import ModelLibError
from model_lib.sagemaker.launch import TRACKING_URI_ENV
from model_lib.sagemaker.tune import PARENT_RUN_TAG, TUNING_JOB_TAG, Trial, open_parent_run, record_outcome, shown_values
from model_lib.tracking.lineage import TAGS_ENV, user_tags
from model_lib.tuning import TuneConfig, sampled

RESULTS_FILE = "results.json"


def _value_text(value: Any) -> str:
    """Return a tuned value as a ``-S`` override spells it (strings bare, the rest JSON: true, null, 0.001)."""
    return value if isinstance(value, str) else json.dumps(value)


def trial_command(params: str, overrides: Mapping[str, str], values: Mapping[str, Any], base_dir: Path) -> list[str]:
    """Return the ``model-lib sagemaker-local`` command of one trial."""
    executable = Path(sys.executable).with_name("model-lib")
    command = [str(executable) if executable.is_file() else "model-lib", "sagemaker-local", "--params", params]
    for key, value in {**overrides, **{k: _value_text(v) for k, v in values.items()}}.items():
        command += ["-S", f"train.{key}={value}"]
    return [*command, "--base-dir", str(base_dir)]


def _tracking_env() -> dict[str, str]:
    """Return MLFLOW_TRACKING_URI for the trials: the one set here, else the local store ``model-lib train``
    uses (``sqlite:///mlflow.db`` in this folder), made absolute: each trial runs in its own folder."""
    uri = os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return {TRACKING_URI_ENV: uri}


def run_trial(command: list[str], env: Mapping[str, str], report: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run one trial, showing its output as it comes (``  | `` prefixed); return its exit code and lines."""
    lines: list[str] = []
    with subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            report(f"  | {lines[-1]}")
        return process.wait(), lines


def run(args: argparse.Namespace, overrides: Mapping[str, str], *, report: Callable[[str], None] = print) -> int:
    """Run the local search of ``args.params``'s tune: section; return 0 when a trial completed.

    Raises:
        ConfigError: for a bad tune: or train: section (before any trial runs).
        ModelLibError: if the trials' folder exists (pass another --job-name or --base-dir).
    """
    from model_lib.sagemaker import tune
    from model_lib.tuning import load_tune

    search, train, config = load_tune(args.params, overrides)
    name = tune.tuning_job_name(args.job_name)
    folder = args.base_dir / name
    if folder.exists():
        raise ModelLibError(f"{folder}: exists; pass another --job-name or --base-dir")
    os.environ.update(_tracking_env())  # the parent run goes where the trials' runs go
    env = dict(os.environ)
    parent = open_parent_run(name, search, train, {**user_tags(), "model_lib.local": "true"})
    tags = {**user_tags(), PARENT_RUN_TAG: parent, TUNING_JOB_TAG: name}
    report(f"tune --local: {name}: up to {search.trials} trials, one at a time; MLflow parent run {parent}")
    env[TAGS_ENV] = json.dumps(tags)
    done = [
        _one_trial(search, args.params, overrides, values, folder, f"{name}-{number:03d}", env, report)
        for number, values in enumerate(sampled(search, config.seed), 1)
    ]
    best = _best(search, done)
    write_json(folder / RESULTS_FILE, _results(name, search, done, best, parent))
    ended = {"HyperParameterTuningJobStatus": "Completed" if best else "Failed", "TrainingJobStatusCounters": _counts(done)}
    summary = tune.summary_of(ended, best)
    record_outcome(parent, summary, search.objective)
    if best is None:
        report(f"tune --local: {name}: no trial completed; see {folder}")
        return 1
    score = f"{search.objective} {best.objective:.6g}"
    report(f"tune --local: {name}: best trial {best.name}, {score} ({best.shown()}); {folder / RESULTS_FILE}")
    if args.apply_best:
        tune.apply_best(args.params, best, name, report=report)
    return 0


def _one_trial(
    search: TuneConfig,
    params: str,
    overrides: Mapping[str, str],
    values: dict[str, Any],
    folder: Path,
    name: str,
    env: Mapping[str, str],
    report: Callable[[str], None],
) -> Trial:
    shown = shown_values(values)
    report(f"{time.strftime('%H:%M:%S')} trial {name} InProgress ({shown})")
    code, lines = run_trial(trial_command(params, overrides, values, folder / name), env, report)
    scores = read_metric(lines, search.objective)
    status = "Completed" if code == 0 else ("Stopped" if code == 143 else "Failed")
    objective = scores[-1] if scores and status == "Completed" else None
    score = f": {search.objective} {objective:.6g}" if objective is not None else ""
    report(f"{time.strftime('%H:%M:%S')} trial {name} {status} ({shown}){score}")
    return Trial(name, status, values, objective)


def _best(search: TuneConfig, done: list[Trial]) -> Trial | None:
    best = None
    for trial in done:
        if trial.objective is not None and (best is None or search.better(trial.objective, best.objective)):  # type: ignore[arg-type]
            best = trial
    return best


def _counts(done: list[Trial]) -> dict[str, int]:
    return {
        "Completed": sum(t.status == "Completed" for t in done),
        "NonRetryableError": sum(t.status == "Failed" for t in done),
        "Stopped": sum(t.status == "Stopped" for t in done),
    }


def _results(name: str, search: TuneConfig, done: list[Trial], best: Trial | None, parent: str) -> dict[str, Any]:
    return {
        "tuning_job": name,
        "strategy": search.strategy,
        "objective": search.objective,
        "objective_type": search.objective_type,
        "mlflow_parent_run": parent,
        "best_trial": best.name if best else None,
        "trials": [{"name": t.name, "status": t.status, "values": t.values, "objective": t.objective} for t in done],
    }
