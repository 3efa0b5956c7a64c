"""The options of a SageMaker training job: the flags of ``model-lib launch`` and of MODEL_LIB_LAUNCH_OPTIONS.

Standard library only: ``model_lib.cli`` builds its parser from these fields for every command, so a
stage that never launches a job (a local ``dvc repro``) imports this module and nothing else of the
SageMaker adapter.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

MAX_INSTANCE_COUNT = 20  # SageMaker's default quota per training job; raise it here with the quota
MAX_RUN_SECONDS = 28 * 24 * 3600  # SageMaker's limit on MaxRuntimeInSeconds and MaxWaitTimeInSeconds
MAX_KEEP_ALIVE_SECONDS = 3600  # SageMaker's limit on ResourceConfig.KeepAlivePeriodInSeconds (warm pools)
# SageMaker's forms of what the string flags name; the SDK passes a malformed one on (or fails with
# a traceback), so launch checks them first.
_FORMS = {
    "instance_type": (re.compile(r"ml\.[a-z][a-z0-9-]*\.[a-z0-9-]+"), "ml.<family>.<size> (e.g. ml.m5.xlarge, ml.g5.xlarge)"),
    "job_name": (re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"), "1-63 letters, digits and '-', not starting with '-'"),
    "role_arn": (re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}"), "arn:aws:iam::<account>:role/<name>"),
    "bucket": (re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"), "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"),
    "mlflow_secret": (re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}"), "a Secrets Manager secret name or ARN"),
    "image_uri": (re.compile(r"[^\s/]+/[^\s]+"), "<registry>/<repository>:<tag>"),
}
_LOCAL_MODE = ("local", "local_gpu")
# The channel input modes a job may use (Pipe would need a reader of named pipes).
# FastFile: SageMaker's docs exclude only *augmented* manifests from it, so ManifestFile channels may use it.
INPUT_MODES = ("File", "FastFile")


def _option(default: Any, help: str, metavar: str | None = None) -> Any:
    """A LaunchOptions field that is also a flag of ``model-lib launch`` (and of MODEL_LIB_LAUNCH_OPTIONS):
    ``--<name-with-dashes>``, its type from the annotation, ``help`` as its help text."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to run the job; every field has the default ``model-lib launch`` uses. A field made with
    ``_option`` is a flag of ``model-lib launch`` (model_lib.cli derives the flags from these fields)."""

    image_uri: str | None = _option(
        None,
        "training image (default: Terraform output ecr_repository_url + ':<cpu|gpu>-<git short commit>', "
        "the tag `make docker-push` pushes; gpu for ml.p*/ml.g* instance types)",
    )
    role_arn: str | None = _option(None, "execution role ARN (default: Terraform output sagemaker_role_arn)")
    bucket: str | None = _option(None, "S3 bucket for code, outputs and checkpoints (default: Terraform output bucket_name)")
    terraform_outputs: Path | None = _option(None, "JSON from `terraform output -json` (default: run it)")  # noqa: RUF009 - a field()
    remote: str | None = _option(None, "DVC remote whose S3 objects become the channels (default: the first S3 remote)")
    instance_type: str = _option("ml.m5.xlarge", "instance type (default: ml.m5.xlarge)")
    instance_count: int = _option(
        1,
        "instances (default 1); N > 1 trains data parallel on N hosts on the JAX backend (KERAS_BACKEND=jax is set "
        "for the job and the <cpu|gpu>-jax-<commit> image is used)",
    )
    input_mode: str = _option(
        "File",
        "how each channel reaches the job: File (downloaded before training starts) or FastFile (streamed from "
        "S3 as it is read, the same paths; for data larger than the instance volume) (default: File)",
        metavar="File|FastFile",
    )
    spot: bool = _option(False, "managed spot training: interrupted jobs resume from checkpoints")
    max_run: int = _option(24 * 3600, "seconds of training before the job is stopped (default 86400)")
    max_wait: int | None = _option(None, "spot: seconds including waits for capacity, >= --max-run (default 2x)")
    spot_fallback: bool = _option(
        False,
        "with --spot: when a spot attempt fails for lack of capacity (or waits in Starting longer than "
        "--spot-fallback-after), the next attempt runs on demand from the same checkpoints and MLflow run "
        "(the remote train stage; `launch --wait`)",
    )
    spot_fallback_after: int = _option(
        3600,
        "with --spot-fallback: seconds a spot attempt may wait in Starting before it is stopped (default 3600)",
        metavar="SECONDS",
    )
    keep_alive: int | None = _option(
        None,
        "warm pool: keep the instance SECONDS (1..3600) after the job for the next job of the same instance "
        "options (billed on demand while kept; not with --spot)",
        metavar="SECONDS",
    )
    max_cost: float | None = _option(
        None,
        "refuse a job that could cost more than USD: --max-run x the instance type's on-demand price (the shipped "
        "table) x --instance-count (spot bills training seconds only, at most --max-run)",
        metavar="USD",
    )
    job_name: str | None = _option(None, "training job name (default: model-lib-<timestamp>)")
    allow_local_tracking: bool = _option(False, "accept an MLFLOW_TRACKING_URI on this machine (SageMaker local mode)")
    register_model: str | None = _option(
        None, "register the job's logged model as a new version of NAME in MLflow", metavar="NAME"
    )
    mlflow_secret: str | None = _option(
        None,
        "AWS Secrets Manager secret with the MLflow server's credentials, read by the job with its role "
        '({"username": ..., "password": ...} or {"token": ...}); only the name is passed to the job',
        metavar="NAME",
    )
    source_dir: Path = Path("entry_point")
    prepared: Path = Path("data/prepared")
    repo: Path = Path(".")

    @property
    def spot_max_wait(self) -> int:
        """Return the seconds a spot job may wait for capacity and train: ``max_wait``, else 2 x ``max_run``."""
        return self.max_wait if self.max_wait is not None else 2 * self.max_run

    def problems(self) -> list[str]:
        """Return what is wrong with these options, one line each naming the flag, the value and what
        was expected (empty when nothing is): a string not of the form SageMaker takes, a number out
        of SageMaker's bounds, a spot job whose --max-wait is below its --max-run, a spot-only flag
        without --spot, a warm pool with --spot, a job that could cost more than --max-cost."""
        problems = []
        for name, (form, expected) in _FORMS.items():
            value = getattr(self, name)
            if value is not None and not form.fullmatch(value):
                local = "; SageMaker local mode is `model-lib sagemaker-local`" if value in _LOCAL_MODE else ""
                problems.append(f"--{name.replace('_', '-')} {value!r}: expected {expected}{local}")
        bounds = {
            "instance_count": MAX_INSTANCE_COUNT,
            "max_run": MAX_RUN_SECONDS,
            "max_wait": MAX_RUN_SECONDS,
            "keep_alive": MAX_KEEP_ALIVE_SECONDS,
            "spot_fallback_after": MAX_RUN_SECONDS,
        }
        for name, most in bounds.items():
            value = getattr(self, name)
            if value is not None and not 1 <= value <= most:
                problems.append(f"--{name.replace('_', '-')} {value}: expected 1..{most}")
        if self.input_mode not in INPUT_MODES:
            problems.append(f"--input-mode {self.input_mode!r}: expected one of {', '.join(INPUT_MODES)}")
        if self.spot and self.spot_max_wait < self.max_run:
            problems.append(
                f"--max-wait {self.spot_max_wait} is below --max-run {self.max_run}: spot jobs need max-wait >= max-run"
            )
        if self.spot_fallback and not self.spot:
            problems.append("--spot-fallback: falls back from spot to on demand; it needs --spot")
        if self.keep_alive is not None and self.spot:
            problems.append(f"--keep-alive {self.keep_alive}: SageMaker keeps no warm pool for managed spot jobs (--spot)")
        if self.max_cost is not None:
            problems.extend(self.cost_problems())
        return problems

    def cost_problems(self, trials: int = 1) -> list[str]:
        """Return why --max-cost refuses ``trials`` jobs of these options (1: this job; a tuning job's
        trials): not a positive figure, an unpriced instance type, or a worst case (each billed
        --max-run) above it; none without --max-cost."""
        max_cost = self.max_cost
        if max_cost is None:
            return []
        from model_lib.sagemaker.cost import most_cost_problem

        if not 0 < max_cost < float("inf"):  # NaN fails too
            return [f"--max-cost {max_cost}: expected a positive number of US dollars"]
        problem = most_cost_problem(max_cost, self.instance_type, self.instance_count, self.max_run, trials)
        return [problem] if problem else []


__all__ = ["INPUT_MODES", "MAX_INSTANCE_COUNT", "MAX_KEEP_ALIVE_SECONDS", "MAX_RUN_SECONDS", "LaunchOptions"]
