"""Start a SageMaker training job (SDK v2 ``Estimator``, script mode on our own image).

``plan`` gathers everything a job needs and lists *every* problem at once (channels not pushed,
image not in ECR, Terraform outputs missing, no S3 remote, AWS credentials); ``start`` sends the
CreateTrainingJob request (or, for a dry run, returns it unsent); ``wait`` follows the job to its end.

The channels are the DVC-pushed ``prepare`` outputs: ``dvc.api.get_url`` names each object in the
S3 remote (it does not check the object exists: ``plan`` does). A directory output's channel is an S3
ManifestFile listing exactly its ``.dir``'s objects (model_lib.sagemaker.channels), written when the
job is started. SDK v3's ``ModelTrainer`` replaces
the image's entrypoint with its own script, so the toolkit's ``train`` would never run: this uses
v2's ``Estimator``. SDK telemetry is off unless your SageMaker SDK config sets ``TelemetryOptOut: false``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from model_lib.config import TrainConfig, effective_hyperparameters, to_dict
from model_lib.errors import ConfigError, SageMakerEnvironmentError
from model_lib.prepared import channel_paths
from model_lib.redaction import find_secret, named_like_a_secret, redact
from model_lib.sagemaker import channels as dvc_channels
from model_lib.sagemaker import jobs
from model_lib.sagemaker.cost import JobCost, described_job_cost
from model_lib.sagemaker.environment import CONTAINER_CHECKPOINT_DIR
from model_lib.sagemaker.jobs import split_s3_uri
from model_lib.sagemaker.options import LaunchOptions
from model_lib.tracking.credentials import SECRET_ENV
from model_lib.tracking.datasets import DATA_DIGESTS_ENV, DATA_REMOTE_ENV, remote_of_object
from model_lib.tracking.lineage import TAGS_ENV, experiment_tags
from model_lib.tracking.system_metrics import INTERVAL_ENV, SYSTEM_METRICS_ENV, settings
from model_lib.tracking.uris import REGISTER_MODEL_ENV, public_uri

logger = logging.getLogger(__name__)

# Passed into the job's environment when set here; never credentials (plan refuses a value holding one:
# SageMaker shows the Environment, hyperparameters and tags to anyone allowed DescribeTrainingJob).
# SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT is the sagemaker-mlflow plugin's endpoint override (a VPC endpoint).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable
FORWARDED_ENV = (
    TRACKING_URI_ENV,
    "MLFLOW_EXPERIMENT_NAME",
    TAGS_ENV,
    SECRET_ENV,
    REGISTER_MODEL_ENV,
    "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT",
    SYSTEM_METRICS_ENV,
    INTERVAL_ENV,
)
# A job on more than one instance trains on the JAX backend (Keras 3's multi-host data parallelism,
# see model_lib.distributed): launch sets KERAS_BACKEND in the job's environment and uses the image
# variant with jax (tag <kind>-jax-<commit>). One instance keeps the TensorFlow backend and image.
MULTI_INSTANCE_BACKEND = "jax"
TERRAFORM_OUTPUTS = ("ecr_repository_url", "sagemaker_role_arn", "bucket_name")
_MD5_IN_URL = re.compile(r"/files/md5/([0-9a-f]{2})/([0-9a-f]{30}(?:\.dir)?)$")  # a file's or a directory's


@dataclasses.dataclass
class LaunchPlan:
    """One checked training job, ready to be sent."""

    job_name: str
    image_uri: str
    role_arn: str
    bucket: str
    channels: dict[str, str]
    hyperparameters: dict[str, Any]
    environment: dict[str, str]
    tags: dict[str, str]
    options: LaunchOptions
    checkpoint_name: str | None = None  # default: the job name; attempts of one training share one
    # The channels that are DVC directories ({name: the MD5s of the .dir's objects}): ManifestFile channels.
    channel_members: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def checkpoint_s3_uri(self) -> str:
        return f"s3://{self.bucket}/checkpoints/{self.checkpoint_name or self.job_name}/"

    @property
    def output_path(self) -> str:
        return f"s3://{self.bucket}/jobs"


def image_kind(instance_type: str) -> str:
    """Return "gpu" for GPU instance families (ml.p*, ml.g*), else "cpu"."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return "gpu" if family[:1] in ("p", "g") else "cpu"


def image_tag(kind: str, commit: str, jax: bool = False) -> str:
    """Return the image tag for ``kind`` built at ``commit`` (the rule docker-compose.yml and
    ``make docker-push`` use too: ``<cpu|gpu>-<git short commit>``; ``<cpu|gpu>-jax-<commit>`` for
    the variant with jax, ``make image-jax``)."""
    return f"{kind}-jax-{commit}" if jax else f"{kind}-{commit}"


def terraform_outputs(path: Path | None = None, chdir: Path = Path("terraform")) -> dict[str, Any]:
    """Return ``terraform output -json`` as {name: value}, from a saved file or by running terraform.

    Raises:
        SageMakerEnvironmentError: if the outputs cannot be read.
    """
    try:
        if path is not None:
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            done = subprocess.run(["terraform", f"-chdir={chdir}", "output", "-json"], capture_output=True, text=True, check=True)
            raw = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        where = path or f"terraform -chdir={chdir} output -json"
        raise SageMakerEnvironmentError(
            f"terraform outputs ({where}): cannot read them ({exc}); pass --terraform-outputs FILE"
        ) from None
    if not isinstance(raw, dict):
        raise SageMakerEnvironmentError(f"terraform outputs ({path}): expected a JSON object of outputs")
    return {name: item["value"] if isinstance(item, dict) and "value" in item else item for name, item in raw.items()}


def dvc_s3_remote(name: str | None, repo: Path = Path(".")) -> str:
    """Return the DVC remote whose objects become the channels: ``name``, else the first S3 remote.

    Raises:
        SageMakerEnvironmentError: if ``name`` is not an S3 remote, or there is no S3 remote.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc_repo:
            remotes = {remote: dict(settings) for remote, settings in dvc_repo.config.get("remote", {}).items()}
    except NotDvcRepoError:
        raise SageMakerEnvironmentError(f"{Path(repo).resolve()} is not in a DVC repository: run from the project root") from None
    s3 = [remote for remote, settings in remotes.items() if str(settings.get("url", "")).startswith("s3://")]
    if name is not None:
        if name not in remotes:
            raise SageMakerEnvironmentError(f"--remote {name}: no such DVC remote; remotes: {', '.join(remotes) or 'none'}")
        if name not in s3:
            raise SageMakerEnvironmentError(
                f"--remote {name}: {public_uri(str(remotes[name].get('url')))} is not in S3; a job reads its data from S3"
            )
        return name
    if not s3:
        raise SageMakerEnvironmentError(
            f"no S3 DVC remote (remotes: {', '.join(remotes) or 'none'}): add one with "
            "`dvc remote add s3 s3://<bucket>/dvc` (README: DVC remotes) and `dvc push`"
        )
    return s3[0]


def channel_uris(prepared: Path = Path("data/prepared"), remote: str | None = None, repo: str = ".") -> dict[str, str]:
    """Return the S3 URI of each channel's object in the DVC remote (as ``dvc push`` stores it): a file
    output's object, a directory output's ``.dir`` object (``.../<md5>.dir``)."""
    import dvc.api

    return {name: dvc.api.get_url(str(path), repo=repo, remote=remote) for name, path in channel_paths(prepared).items()}


def _credentials_problem(exc: Exception) -> str | None:
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"AWS credentials: {exc}; configure them (aws configure, AWS_PROFILE or an instance role)"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in (
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
        ):
            return f"AWS credentials were refused ({code}); check AWS_PROFILE / the keys in use"
    return None


def _missing_objects(uris: Mapping[str, str], s3: Any) -> list[str]:
    from botocore.exceptions import ClientError

    problems = []
    for name, uri in uris.items():
        if not uri.startswith("s3://"):
            problems.append(f"channel {name!r}: {uri} is not in S3; use an S3 DVC remote (--remote)")
            continue
        bucket, key = split_s3_uri(uri)
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            credentials = _credentials_problem(exc)
            if credentials:
                return [credentials]
            problems.append(f"channel {name!r}: {uri} not found; run `dvc push -r <remote>`")
    return problems


def _missing_directory_objects(draft: _Draft, s3: Any, reported: list[str]) -> list[str]:
    """Read each directory channel's ``.dir`` listing (into ``draft.listings``); name the files of it
    not pushed (a channel already ``reported`` missing is not named twice)."""
    problems = []
    for name, uri in draft.channels.items():
        if not (uri.startswith("s3://") and dvc_channels.is_directory(uri)):
            continue
        if any(problem.startswith(f"channel {name!r}:") for problem in reported):
            continue
        try:
            listing = dvc_channels.read_listing(uri, s3, draft.options.repo)
        except SageMakerEnvironmentError as exc:
            problems.append(f"channel {name!r}: {exc}")
            continue
        draft.listings[name] = listing
        missing = dvc_channels.missing_members(listing, s3)
        if missing:
            shown = ", ".join(f"{relpath} ({uri})" for relpath, uri in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            problems.append(
                f"channel {name!r}: {len(missing)} of the {len(listing.entries)} files of {uri} not found: "
                f"{shown}{more}; run `dvc push -r <remote>`"
            )
    return problems


def image_problem(image_uri: str, ecr: Any) -> str | None:
    """Return why ``image_uri`` cannot run a job or an endpoint (no tag, not in ECR, no credentials), or None."""
    from botocore.exceptions import ClientError

    repository, _, tag = image_uri.split("/", 1)[-1].partition(":")
    if not tag:
        return f"image {image_uri}: no tag; expected <repository>:<tag>"
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ClientError as exc:
        credentials = _credentials_problem(exc)
        if credentials:
            return credentials
        code = exc.response.get("Error", {}).get("Code", "error")
        return f"image {image_uri} not in ECR ({code}): run `make docker-push` (it pushes the cpu, gpu, cpu-jax and gpu-jax tags)"
    return None


def _secret_problem(name: str, secrets: Any) -> list[str]:
    from botocore.exceptions import ClientError

    try:
        secrets.describe_secret(SecretId=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return [f"--mlflow-secret {name!r}: {code}; create it (README: MLflow, authentication)"]
    return []


def tracking_uri_problem(uri: str | None, allow_local: bool = False) -> str | None:
    """Return why a cloud job could not reach the tracking URI it is given, or None if it could (or
    none is given): a URI only this machine can reach (localhost, 127.x, ::1, file:, sqlite:, a bare
    path) is a problem unless ``allow_local`` (SageMaker local mode). The message hides credentials."""
    import ipaddress
    import urllib.parse

    if not uri or allow_local:
        return None
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    local = scheme in ("", "file", "sqlite")
    if scheme in ("http", "https") and parts.hostname:
        host = parts.hostname.lower()
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost" or host.endswith(".localhost")
    if not local:
        return None
    from model_lib.tracking import public_uri

    return (
        f"MLFLOW_TRACKING_URI={public_uri(uri)!r} is on this machine: a SageMaker job cannot reach it. Point it at a "
        "shared server (README: MLflow), or pass --allow-local-tracking for SageMaker local mode"
    )


_SECRET_ADVICE = (
    "SageMaker shows a job's Environment, hyperparameters and tags to anyone allowed DescribeTrainingJob: put "
    f"MLflow's credentials in an AWS Secrets Manager secret and pass its name (--mlflow-secret NAME or {SECRET_ENV}; "
    "README: MLflow, authentication)"
)


def user_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the tags of MODEL_LIB_MLFLOW_TAGS ({} when unset).

    Raises:
        ConfigError: unless it is a JSON object of names to strings.
    """
    raw = (os.environ if environ is None else environ).get(TAGS_ENV) or "{}"
    try:
        tags = json.loads(raw)
    except ValueError:
        tags = None
    if not isinstance(tags, dict) or not all(isinstance(value, str) for value in tags.values()):
        raise ConfigError(f"{TAGS_ENV}={redact(raw, environ)[:200]!r}: expected a JSON object of tag names to strings")
    return tags


def forwarded_secret_problems(config: TrainConfig, options: LaunchOptions, environ: Mapping[str, str] | None = None) -> list[str]:
    """Return one line for each credential the job's request would carry: user:password in a forwarded
    variable (MLFLOW_TRACKING_URI), a hyperparameter or a tag; a tag named like a credential; the value
    of a credential variable (AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_PASSWORD, ...). No line shows the
    credential."""
    environ = os.environ if environ is None else environ
    forwarded = [key for key in FORWARDED_ENV if environ.get(key) and key != TAGS_ENV]
    values = {f"{key}={redact(environ[key], environ)!r}": environ[key] for key in forwarded}
    hyperparameters = {key: str(value) for key, value in job_hyperparameters(config).items()}
    values.update({f"train.{key}={redact(value, environ)!r}": value for key, value in hyperparameters.items()})
    problems = []
    try:
        tags = user_tags(environ)
    except ConfigError as exc:
        problems.append(str(exc))
        tags = {}
    for name, value in tags.items():
        if named_like_a_secret(name):
            problems.append(f"{TAGS_ENV}: {name}: a tag named like a credential; {_SECRET_ADVICE}")
        else:
            values[f"{TAGS_ENV}: {name}"] = value
    for where, value in values.items():
        found = find_secret(value, environ)
        if found:
            problems.append(f"{where}: holds {found}; {_SECRET_ADVICE}")
    return problems


def job_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """Return the train config as hyperparameters (nulls left out: the job applies the same defaults)."""
    return {key: value for key, value in to_dict(config).items() if value is not None}


def _lineage(git: Mapping[str, str], channels: Mapping[str, str]) -> dict[str, str]:
    tags = {"git_commit": git["git_commit"], "git_dirty": git["git_dirty"]}
    for name, uri in channels.items():
        found = _MD5_IN_URL.search(uri)
        if found:
            tags[f"dvc_md5.{name}"] = found.group(1) + found.group(2)
    return tags


@dataclasses.dataclass
class _Draft:
    """What the checks of :func:`plan` find out, each check filling in its part."""

    config: TrainConfig
    options: LaunchOptions
    boto_session: Any
    git: dict[str, str]
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    image_uri: str = ""
    channels: dict[str, str] = dataclasses.field(default_factory=dict)
    listings: dict[str, dvc_channels.DirectoryListing] = dataclasses.field(default_factory=dict)


def _check_hyperparameters(draft: _Draft) -> list[str]:
    try:
        effective_hyperparameters(draft.config)  # the job would fail on these at its start
    except ConfigError as exc:
        return [str(exc)]
    return []


def _check_options(draft: _Draft) -> list[str]:
    return draft.options.problems()


def _check_secrets(draft: _Draft) -> list[str]:
    return forwarded_secret_problems(draft.config, draft.options)


def _check_tracking(draft: _Draft) -> list[str]:
    problem = tracking_uri_problem(os.environ.get(TRACKING_URI_ENV), draft.options.allow_local_tracking)
    problems = [problem] if problem else []
    try:
        settings()  # forwarded to the job: a bad value fails here, not in the job
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def _check_registered_model(draft: _Draft) -> list[str]:
    register = draft.options.register_model or os.environ.get(REGISTER_MODEL_ENV)
    if not register:
        return []
    from model_lib.tracking import check_model_name

    problems = []
    try:
        check_model_name(register)
    except ConfigError as exc:
        problems.append(str(exc))
    if not os.environ.get(TRACKING_URI_ENV):
        problems.append(f"--register-model {register}: the job tracks nowhere ({TRACKING_URI_ENV} is not set)")
    return problems


def _find_terraform_outputs(draft: _Draft) -> list[str]:
    """Read the Terraform outputs the flags do not replace; name those missing."""
    options = draft.options
    given = (options.image_uri, options.role_arn, options.bucket)
    if all(given):
        return []
    problems = []
    try:
        draft.outputs = terraform_outputs(options.terraform_outputs)
    except SageMakerEnvironmentError as exc:
        problems.append(str(exc))
    missing = [name for name, value in zip(TERRAFORM_OUTPUTS, given) if not value and not draft.outputs.get(name)]
    if draft.outputs and missing:
        problems.append(
            f"terraform outputs: {', '.join(missing)} missing; run `terraform -chdir=terraform apply` (or pass the flags)"
        )
    return problems


def _choose_image(draft: _Draft) -> list[str]:
    """The image: --image-uri, else the ECR repository's tag of this commit (the jax variant for several hosts)."""
    options = draft.options
    repository = draft.outputs.get("ecr_repository_url")
    tag = image_tag(image_kind(options.instance_type), draft.git["git_short"], jax=options.instance_count > 1)
    draft.image_uri = options.image_uri or (f"{repository}:{tag}" if repository else "")
    return []


def _find_channels(draft: _Draft) -> list[str]:
    options = draft.options
    try:
        remote = dvc_s3_remote(options.remote, options.repo)
        draft.channels = channel_uris(options.prepared, remote, str(options.repo))
    except SageMakerEnvironmentError as exc:
        return [str(exc)]
    except Exception as exc:  # DVC: an output not tracked, no dvc.lock entry
        return [f"channels: {exc}; run `dvc repro prepare` and commit dvc.lock"]
    return []


def _check_aws(draft: _Draft) -> list[str]:
    """What AWS holds: the MLflow secret, every channel object, the image."""
    secret = draft.options.mlflow_secret or os.environ.get(SECRET_ENV)
    problems: list[str] = []
    try:
        if secret:
            problems.extend(_secret_problem(secret, draft.boto_session.client("secretsmanager")))
        if draft.channels:
            s3 = draft.boto_session.client("s3")
            found = _missing_objects(draft.channels, s3)
            problems.extend(found)
            if not any(problem.startswith("AWS credentials") for problem in found):
                problems.extend(_missing_directory_objects(draft, s3, found))
        if draft.image_uri:
            image = image_problem(draft.image_uri, draft.boto_session.client("ecr"))
            if image and image not in problems:
                problems.append(image)
    except Exception as exc:  # botocore: no credentials, endpoint unreachable
        problems.append(_credentials_problem(exc) or f"AWS: {type(exc).__name__}: {exc}")
    return problems


# In order: a later check reads what an earlier one found (the image needs the Terraform outputs,
# the AWS checks the image and the channels).
_CHECKS: tuple[Callable[[_Draft], list[str]], ...] = (
    _check_hyperparameters,
    _check_options,
    _check_tracking,
    _check_secrets,
    _check_registered_model,
    _find_terraform_outputs,
    _choose_image,
    _find_channels,
    _check_aws,
)


def _job_environment(options: LaunchOptions, lineage: Mapping[str, str], channels: Mapping[str, str]) -> dict[str, str]:
    """Return the job's environment: the forwarded variables, the flags that set one, the lineage
    tags, the DVC remote the channels are objects of (the run's datasets name them) and the ``.dir``
    md5 of each directory channel (the job cannot compute it: its files arrive under their md5s)."""
    environment = {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}
    if options.register_model:
        environment[REGISTER_MODEL_ENV] = options.register_model
    if options.mlflow_secret:
        environment[SECRET_ENV] = options.mlflow_secret
    if options.instance_count > 1:
        environment["KERAS_BACKEND"] = MULTI_INSTANCE_BACKEND
    environment[TAGS_ENV] = json.dumps({**lineage, **user_tags()}, sort_keys=True)
    remotes = {remote_of_object(uri) for uri in channels.values()}
    if len(remotes) == 1 and None not in remotes:  # one URL, not four: a value holds at most 512 characters
        environment[DATA_REMOTE_ENV] = str(remotes.pop())
    directories = {name: found.group(1) + found.group(2) for name, uri in channels.items() if (found := _MD5_IN_URL.search(uri))}
    directories = {name: md5 for name, md5 in directories.items() if dvc_channels.is_directory(md5)}
    if directories:
        environment[DATA_DIGESTS_ENV] = json.dumps(directories, sort_keys=True)
    return environment


def raise_if_any(found: list[str], what: str = "the job") -> None:
    """Raise one error listing every problem ``found`` (each once, redacted); nothing when there is none.

    Raises:
        SageMakerEnvironmentError: ``<what> was not started; N problem(s):`` and a line per problem.
    """
    problems = list(dict.fromkeys(found))
    if problems:
        # A problem may quote a library's exception text (DVC, botocore): redact what it might hold.
        listed = "\n".join(f"  - {redact(p)}" for p in problems)
        raise SageMakerEnvironmentError(f"{what} was not started; {len(problems)} problem(s):\n{listed}")


# What plan checks that needs nothing but the config, the options and this process's environment.
_LOCAL_CHECKS = (_check_hyperparameters, _check_options, _check_tracking, _check_secrets, _check_registered_model)


def local_problems(config: TrainConfig, options: LaunchOptions) -> list[str]:
    """Return what the checks of :func:`plan` that need no AWS, DVC, git or Terraform find (options,
    hyperparameters, tracking URI, credentials in what would be forwarded), one line each."""
    draft = _Draft(config, options, boto_session=None, git={})
    return [problem for check in _LOCAL_CHECKS for problem in check(draft)]


def check_before_anything(config: TrainConfig, options: LaunchOptions) -> None:
    """Run the checks of :func:`local_problems`, so that a stage fails before it pushes data.

    Raises:
        SageMakerEnvironmentError: listing every problem found.
    """
    raise_if_any(local_problems(config, options))


def plan(config: TrainConfig, options: LaunchOptions, boto_session: Any) -> LaunchPlan:
    """Return the checked job for ``config``: every problem found is reported at once.

    Raises:
        SageMakerEnvironmentError: listing every problem, each with what to run.
    """
    from model_lib.tracking import git_state

    draft = _Draft(config, options, boto_session, git_state(options.repo))
    raise_if_any([problem for check in _CHECKS for problem in check(draft)])
    # The DVC experiment and sweep go with the lineage: run tags, and the SageMaker job's (a sweep's jobs are found by them too).
    lineage = {**_lineage(draft.git, draft.channels), **experiment_tags()}
    return LaunchPlan(
        job_name=options.job_name or f"model-lib-{time.strftime('%Y%m%d-%H%M%S')}",
        image_uri=draft.image_uri,
        role_arn=options.role_arn or draft.outputs["sagemaker_role_arn"],
        bucket=options.bucket or draft.outputs["bucket_name"],
        channels=draft.channels,
        hyperparameters=job_hyperparameters(config),
        environment=_job_environment(options, lineage, draft.channels),
        tags=lineage,
        options=options,
        channel_members={name: listing.members for name, listing in draft.listings.items()},
    )


def sdk_session(boto_session: Any, bucket: str) -> Any:
    """Return a SageMaker SDK session with telemetry off unless the user's SDK config turns it on."""
    import sagemaker
    from sagemaker.config import load_sagemaker_config

    config = load_sagemaker_config()
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules.setdefault("TelemetryOptOut", True)
    return sagemaker.Session(boto_session=boto_session, default_bucket=bucket, sagemaker_config=config)


def build_estimator(job: LaunchPlan, session: Any, source_dir: str | None = None) -> Any:
    """Return the SDK v2 Estimator for ``job``: script mode (train.py in ``source_dir``) on its image."""
    from sagemaker.estimator import Estimator

    options = job.options
    environment: dict[str, Any] = dict(job.environment)
    return Estimator(
        image_uri=job.image_uri,
        role=job.role_arn,
        instance_count=options.instance_count,
        instance_type=options.instance_type,
        entry_point="train.py",
        source_dir=source_dir or str(options.source_dir),
        hyperparameters=job.hyperparameters,
        environment=environment,
        output_path=job.output_path,
        code_location=f"s3://{job.bucket}/code",
        checkpoint_s3_uri=job.checkpoint_s3_uri,
        checkpoint_local_path=str(CONTAINER_CHECKPOINT_DIR),
        max_run=options.max_run,
        sagemaker_session=session,
        disable_profiler=True,
        debugger_hook_config=False,
        tags=[{"Key": k, "Value": v} for k, v in job.tags.items()],
        base_job_name="model-lib",
        use_spot_instances=options.spot,
        max_wait=options.spot_max_wait if options.spot else None,
        keep_alive_period_in_seconds=options.keep_alive,  # ResourceConfig.KeepAlivePeriodInSeconds when set
    )


def start(job: LaunchPlan, boto_session: Any, *, dry_run: bool = False) -> dict[str, Any]:
    """Send the CreateTrainingJob request for ``job`` and return it as sent.

    With ``dry_run`` nothing is sent or uploaded: the code location in the request is where the
    real launch would upload ``entry_point/`` (as sourcedir.tar.gz).
    """
    quiet_sdk_config_logger()
    from sagemaker.inputs import TrainingInput

    session = sdk_session(boto_session, job.bucket)
    planned_code = f"s3://{job.bucket}/code/{job.job_name}/source/sourcedir.tar.gz"
    estimator = build_estimator(job, session, source_dir=planned_code if dry_run else None)
    if not dry_run:
        dvc_channels.upload_manifests(job.bucket, job.channels, job.channel_members, boto_session.client("s3"))
    inputs = {name: TrainingInput(**training_input(job, name)) for name in job.channels}
    answer = {"TrainingJobArn": f"arn:aws:sagemaker:::training-job/{job.job_name} (dry run: not sent)"}
    with captured_requests(session.sagemaker_client, "CreateTrainingJob", answer if dry_run else None) as captured:
        estimator.fit(inputs=inputs, job_name=job.job_name, wait=False, logs="None")
    return captured[-1]


@contextlib.contextmanager
def captured_requests(
    client: Any,
    operation: str,
    answer: Mapping[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield a list that gets each ``operation`` request ``client`` makes meanwhile (as plain JSON values,
    after ``edit`` changed it in place); with ``answer`` the request is not sent, ``answer`` is its response.

    botocore's way to answer a call without sending it (its Stubber's): a response from before-call.
    Raising there instead made the SDK log an ERROR line for a dry run that worked.
    """
    captured: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        if edit is not None:
            edit(params)
        captured.append(json.loads(json.dumps(params, default=str)))

    def not_sent(**_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        return AWSResponse(None, 200, {}, None), {**(answer or {}), "ResponseMetadata": {"HTTPStatusCode": 200}}

    hooks: list[tuple[str, Callable[..., Any]]] = [(f"provide-client-params.sagemaker.{operation}", capture)]
    if answer is not None:
        hooks.append((f"before-call.sagemaker.{operation}", not_sent))
    events = client.meta.events
    for event, hook in hooks:
        events.register(event, hook)
    try:
        yield captured
    finally:
        for event, hook in hooks:
            events.unregister(event, hook)


def training_input(job: LaunchPlan, name: str) -> dict[str, Any]:
    """Return the ``TrainingInput`` arguments of channel ``name``: its DVC object (S3Prefix), or for a
    directory channel the manifest of its objects (ManifestFile); the distribution of
    :func:`channels.channel_distribution` for its object count; the input mode of --input-mode."""
    uri, members = job.channels[name], job.channel_members.get(name)
    objects = 1 if members is None else len(members)  # only a directory channel can be sharded
    arguments: dict[str, Any] = {
        "s3_data": uri,
        "distribution": dvc_channels.channel_distribution(name, job.options.instance_count, objects),
        "input_mode": job.options.input_mode,
    }
    if members is not None:
        arguments.update(s3_data=dvc_channels.manifest_uri(job.bucket, uri, members), s3_data_type="ManifestFile")
    return arguments


def quiet_sdk_config_logger() -> None:
    """Keep the SDK's config loader off stdout (where --dry-run prints the request): from its import on
    it logs INFO lines through a stdout handler of its own, unless its logger already has a handler.
    A NullHandler is one: its records (WARNING and above) then go where ours go, to stderr."""
    config_logger = logging.getLogger("sagemaker.config")
    if config_logger.level == logging.NOTSET:
        config_logger.setLevel(logging.WARNING)
    if not config_logger.handlers:
        config_logger.addHandler(logging.NullHandler())


@dataclasses.dataclass
class JobOutcome:
    """How a job ended: status, model location, billable vs training seconds, test accuracy, cost."""

    status: str
    failure_reason: str | None
    model_artifacts: str | None
    billable_seconds: int | None
    training_seconds: int | None
    test_accuracy: float | None
    cost: JobCost | None = None  # None for an instance type no price source knows
    job_name: str = ""  # the job that ended: with --spot-fallback, maybe the on-demand one


def _summary(model_tar_uri: str, boto_session: Any) -> dict[str, Any]:
    """Return metrics.json inside model.tar.gz (the test metrics and the MLflow run id), or {}."""
    try:
        files = jobs.read_archive(model_tar_uri, boto_session, {jobs.SUMMARY_FILE})
        return dict(json.loads(files[jobs.SUMMARY_FILE]))
    except Exception as exc:  # a missing or odd archive: the outcome is still worth printing
        logger.warning("could not read the job's summary from %s: %s", model_tar_uri, exc)
    return {}


def _test_accuracy(summary: Mapping[str, Any]) -> float | None:
    try:
        return float(summary.get("test", summary)["accuracy"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def log_cost(run_id: Any, cost: JobCost | None) -> None:
    """Add the job's cost to its MLflow run (when this process tracks somewhere); never raises."""
    if not (isinstance(run_id, str) and run_id and cost is not None and os.environ.get(TRACKING_URI_ENV)):
        return
    try:
        from model_lib.tracking import open_tracker

        with open_tracker(run_id=run_id) as tracker:
            tracker.log_metrics(cost.metrics())
    except Exception as exc:  # tracking is never a reason to fail: the report still prints the cost
        logger.warning("could not add the cost to MLflow run %s: %s", run_id, exc)


ON_DEMAND_SUFFIX = "-on-demand"  # the name of the job `launch --wait --spot-fallback` runs after a spot job


def _follow_or_fall_back(
    job: LaunchPlan, boto_session: Any, poll_seconds: float, report: Callable[[str], None]
) -> dict[str, Any]:
    """Follow ``job`` to its end; with --spot-fallback, a spot job that failed for capacity (or waited in
    Starting past --spot-fallback-after: stopped here) is followed by ``<name>-on-demand``, on demand with
    the same checkpoint prefix (so the same MLflow run); return the last job's description."""
    options = job.options
    bound = options.spot_fallback_after if options.spot and options.spot_fallback else None
    until = None if bound is None else lambda described: jobs.waited_for_capacity(described, bound)
    described = jobs.follow(job.job_name, boto_session, poll_seconds=poll_seconds, on_status=report, until=until)
    if bound is None:
        return described
    reason = None
    if described["TrainingJobStatus"] not in jobs.TERMINAL_STATUSES:
        report(f"launch: spot job {job.job_name} waited in Starting over {bound} s for capacity: stopping it")
        jobs.stop(boto_session, job.job_name)
        described = jobs.follow(job.job_name, boto_session, poll_seconds=poll_seconds, on_status=report)
        reason = f"was stopped after {bound} s in Starting" if described["TrainingJobStatus"] == "Stopped" else None
    elif (capacity := jobs.capacity_failure(described)) is not None:
        reason = f"failed for capacity: {capacity}"
    if reason is None:
        return described
    on_demand = dataclasses.replace(
        job,
        job_name=job.job_name[: 63 - len(ON_DEMAND_SUFFIX)] + ON_DEMAND_SUFFIX,
        checkpoint_name=job.checkpoint_name or job.job_name,
        options=dataclasses.replace(options, spot=False, max_wait=None),
    )
    start(on_demand, boto_session)
    report(f"launch: spot job {job.job_name} {reason}; job {on_demand.job_name} runs on demand from the same checkpoints")
    return jobs.follow(on_demand.job_name, boto_session, poll_seconds=poll_seconds, on_status=report)


def wait(
    job_name: str,
    boto_session: Any,
    *,
    poll_seconds: float = 30.0,
    report: Callable[[str], None] = print,
    job: LaunchPlan | None = None,
) -> JobOutcome:
    """Follow the job until it ends, reporting each status change; return how it ended, its cost
    added to the job's MLflow run (named in its model archive) when MLFLOW_TRACKING_URI is set here.
    Given the ``job`` it started as, a spot job with --spot-fallback falls back to on demand
    (``<name>-on-demand``) as the remote train stage does.

    Raises:
        botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: if SageMaker could not be asked.
    """
    if job is not None:
        described = _follow_or_fall_back(job, boto_session, poll_seconds, report)
    else:
        described = jobs.follow(job_name, boto_session, poll_seconds=poll_seconds, on_status=report)
    artifacts = jobs.model_artifacts(described)
    completed = described["TrainingJobStatus"] == "Completed"
    summary = _summary(artifacts, boto_session) if artifacts and completed else {}
    cost = described_job_cost(described, boto_session)
    log_cost(summary.get("run_id"), cost)
    return JobOutcome(
        status=described["TrainingJobStatus"],
        failure_reason=described.get("FailureReason"),
        model_artifacts=artifacts,
        billable_seconds=described.get("BillableTimeInSeconds"),
        training_seconds=described.get("TrainingTimeInSeconds"),
        test_accuracy=_test_accuracy(summary),
        cost=cost,
        job_name=described["TrainingJobName"],
    )
