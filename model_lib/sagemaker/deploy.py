"""Put a trained model behind SageMaker: a real-time (or serverless) endpoint, or a batch transform.

The model is a finished training job's ``model.tar.gz``, named by the job (``--job NAME``), by its S3
URI, or by a registered MLflow model version (``models:/NAME/N``: the version's run carries the
``sagemaker.job_name`` tag the job's entry point sets). The serving image is the job's own training
image (it holds ``serve``: SageMaker's hosting contract) unless ``--image-uri`` names another.

``source_of`` resolves what was named to a Completed job's model; ``plan`` checks everything at once
(the archive is in S3, the image in ECR, a role, the batch input has objects); ``send`` works out the
requests from what exists already and sends them (or, for a dry run, returns them unsent);
``follow`` polls the endpoint or the transform job to its end. boto3 only: no SDK, no TensorFlow.

Names are derived, not stamped with the time, so running the same deploy twice changes nothing:

- Model ``<label>-<digest of image, model data, environment>``; EndpointConfig
  ``<label>-<digest of model, variant>``: an existing one is reused (it is the same by its name);
- Endpoint ``<label>`` (or ``--endpoint-name``): an existing one is refused unless ``--update``, which
  moves it to the new EndpointConfig (UpdateEndpoint; SageMaker keeps serving the old one meanwhile);
- TransformJob ``<label>-batch-<digest of model, input, output, content type, instances>``: SageMaker
  never reuses a transform job's name, so an existing one (the same transform ran) is refused.

``<label>`` is ``<registered name>-v<N>``, the job's name, or ``model-<digest of the URI>``; each name
is cut to SageMaker's 63 characters of letters, digits and '-'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from model_lib.errors import ConfigError, SageMakerEnvironmentError
from model_lib.redaction import find_secret, named_like_a_secret
from model_lib.sagemaker import jobs
from model_lib.sagemaker.deploy_options import DeployOptions
from model_lib.tracking.registered import registered_job_name

logger = logging.getLogger(__name__)

SOURCE_TAG = "model_lib.source"  # on every resource deploy creates: what it was deployed from
VARIANT_NAME = "AllTraffic"
ENDPOINT_TERMINAL = ("InService", "Failed", "OutOfService")
TRANSFORM_TERMINAL = ("Completed", "Failed", "Stopped")
MAX_PAYLOAD_MB = 6  # SageMaker's default: a transform request holds up to 6 MB of lines
_REGISTERED = re.compile(r"models:/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([1-9][0-9]*)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_TAG_VALUE = re.compile(r"[\w.:/=+@ -]{1,256}")
_MAX_NAME = 63


@dataclasses.dataclass(frozen=True)
class Source:
    """A trained model: its model.tar.gz, the label derived names start with, what the user named,
    and the description of the training job that made it (None for an archive no job claims)."""

    model_data: str
    label: str
    origin: str
    job: Mapping[str, Any] | None = None


def digest(*parts: Any) -> str:
    """Return 8 hex digits that change with any of ``parts`` (JSON values)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]


def derived_name(label: str, suffix: str | None = None) -> str:
    """Return a SageMaker resource name (1-63 letters, digits and '-') made of ``label`` and ``-<suffix>``:
    other characters become '-'; a label too long is cut (without a suffix, it gets its digest, so two
    long labels that start alike stay two names)."""
    clean = re.sub(r"[^a-zA-Z0-9]+", "-", label).strip("-") or "model-lib"
    tail = f"-{suffix}" if suffix else ""
    if not suffix and len(clean) > _MAX_NAME:
        tail = f"-{digest(clean)}"
    return clean[: _MAX_NAME - len(tail)].rstrip("-") + tail


def parse_environment(items: list[str] | None) -> dict[str, str]:
    """Return ``--env KEY=VALUE`` items as a mapping.

    Raises:
        ConfigError: for an item not KEY=VALUE, a key not a variable name, a key repeated, or a
            credential (a key named like one, a value holding one): DescribeModel shows the Environment.
    """
    found: dict[str, str] = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"--env {item[:80]!r}: expected KEY=VALUE, KEY a variable name")
        if key in found:
            raise ConfigError(f"--env {key}: given twice")
        secret = "a name that says it holds a credential" if named_like_a_secret(key) else find_secret(value)
        if secret:
            raise ConfigError(
                f"--env {key}: {secret}; SageMaker shows a model's Environment to anyone allowed DescribeModel: "
                "the serving container needs no credential"
            )
        found[key] = value
    return found


def _describe_job(boto_session: Any, name: str, named_as: str) -> dict[str, Any]:
    """Return the description of Completed training job ``name``, which has a model artifact.

    Raises:
        ConfigError: no such job, not Completed, or no ModelArtifacts (``named_as`` says what pointed to it).
    """
    described = jobs.describe(jobs.sagemaker_client(boto_session), name)
    if described is None:
        raise ConfigError(f"{named_as}: no training job {name!r} in SageMaker")
    status = described["TrainingJobStatus"]
    if status != "Completed":
        raise ConfigError(f"{named_as}: training job {name} is {status}; only a Completed job has a model to deploy")
    if jobs.model_artifacts(described) is None:
        raise ConfigError(f"{named_as}: training job {name} has no model artifact (ModelArtifacts.S3ModelArtifacts)")
    return described


def source_of(given: str | None, job: str | None, boto_session: Any) -> Source:
    """Return the model named by ``given`` (``models:/NAME/N`` or ``s3://.../model.tar.gz``) or by
    ``job`` (a training job's name): exactly one of them.

    An S3 URI where SageMaker puts a job's archive (``.../<job>/output/model.tar.gz``) is that job's
    (its image and role are the defaults); any other is served with ``--image-uri`` and ``--role-arn``.

    Raises:
        ConfigError: for neither or both, a malformed source, or a job or version that has no model.
    """
    if (given is None) == (job is None):
        raise ConfigError("deploy: expected one source: models:/NAME/N, s3://.../model.tar.gz, or --job NAME")
    if job is not None:
        described = _describe_job(boto_session, job, f"--job {job}")
        return Source(str(jobs.model_artifacts(described)), job, f"job {job}", described)
    assert given is not None
    registered = _REGISTERED.fullmatch(given)
    if registered:
        name, version = registered.groups()
        job_name = registered_job_name(name, version)
        described = _describe_job(boto_session, job_name, given)
        return Source(str(jobs.model_artifacts(described)), f"{name}-v{version}", given, described)
    if given.startswith("models:/"):
        raise ConfigError(f"{given!r}: expected models:/NAME/N (a version number; aliases and stages are not read)")
    if not (given.startswith("s3://") and given.endswith(".tar.gz")):
        raise ConfigError(f"{given!r}: expected models:/NAME/N or s3://<bucket>/<key>.tar.gz (a job's model.tar.gz)")
    jobs.split_s3_uri(given)
    parts = given.split("/")
    claimed = parts[-3] if len(parts) >= 6 and parts[-2] == "output" else None
    claimant = jobs.describe(jobs.sagemaker_client(boto_session), claimed) if claimed else None
    if claimant is not None and jobs.model_artifacts(claimant) == given:
        return Source(given, claimed or given, given, claimant)
    return Source(given, f"model-{digest(given)}", given, None)


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    """One checked deployment: the SageMaker model and either its endpoint or its transform job."""

    source: Source
    options: DeployOptions
    image_uri: str
    role_arn: str

    @property
    def model_name(self) -> str:
        return derived_name(self.source.label, digest(self.image_uri, self.source.model_data, dict(self.options.environment)))

    @property
    def config_name(self) -> str:
        return derived_name(self.source.label, digest(self.model_name, self.variant()))

    @property
    def endpoint_name(self) -> str:
        return self.options.endpoint_name or derived_name(self.source.label)

    @property
    def transform_name(self) -> str:
        o = self.options
        inputs = (self.model_name, o.batch_input, o.batch_output, o.content_type, o.instance_type, o.instance_count)
        return derived_name(f"{self.source.label}-batch", digest(*inputs))

    def tags(self) -> list[dict[str, str]]:
        tags = {SOURCE_TAG: self.source.origin}
        if self.source.job is not None:
            tags["sagemaker.training_job"] = str(self.source.job["TrainingJobName"])
        return [{"Key": key, "Value": value} for key, value in tags.items() if _TAG_VALUE.fullmatch(value)]

    def model_request(self) -> dict[str, Any]:
        container: dict[str, Any] = {"Image": self.image_uri, "ModelDataUrl": self.source.model_data}
        if self.options.environment:
            container["Environment"] = dict(self.options.environment)
        return {
            "ModelName": self.model_name,
            "ExecutionRoleArn": self.role_arn,
            "PrimaryContainer": container,
            "Tags": self.tags(),
        }

    def variant(self) -> dict[str, Any]:
        o = self.options
        if o.serverless_memory is not None:
            return {"ServerlessConfig": {"MemorySizeInMB": o.serverless_memory, "MaxConcurrency": o.max_concurrency}}
        return {"InstanceType": o.instance_type, "InitialInstanceCount": o.instance_count, "InitialVariantWeight": 1.0}

    def endpoint_config_request(self) -> dict[str, Any]:
        variant = {"VariantName": VARIANT_NAME, "ModelName": self.model_name, **self.variant()}
        return {"EndpointConfigName": self.config_name, "ProductionVariants": [variant], "Tags": self.tags()}

    def endpoint_request(self) -> dict[str, Any]:
        return {"EndpointName": self.endpoint_name, "EndpointConfigName": self.config_name, "Tags": self.tags()}

    def update_request(self) -> dict[str, Any]:
        return {"EndpointName": self.endpoint_name, "EndpointConfigName": self.config_name}

    def transform_request(self) -> dict[str, Any]:
        o = self.options
        source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": o.batch_input}}
        return {
            "TransformJobName": self.transform_name,
            "ModelName": self.model_name,
            # Many lines a request, and one answer line per line: output line i is input line i's review.
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": MAX_PAYLOAD_MB,
            "TransformInput": {"DataSource": source, "ContentType": o.content_type, "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": o.batch_output, "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": o.instance_type, "InstanceCount": o.instance_count},
            "Tags": self.tags(),
        }


def _object_problem(uri: str, what: str, s3: Any) -> str | None:
    from botocore.exceptions import ClientError

    bucket, key = jobs.split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return f"{what} {uri}: not found in S3 ({code})"
    return None


def _batch_input_problem(uri: str, s3: Any) -> str | None:
    from botocore.exceptions import ClientError

    bucket, prefix = jobs.split_s3_uri(uri)
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as exc:
        return f"--batch-input {uri}: cannot list it ({exc.response.get('Error', {}).get('Code', 'error')})"
    return None if listed.get("KeyCount", 0) else f"--batch-input {uri}: no objects under it"


def plan(source: Source, options: DeployOptions, boto_session: Any) -> DeployPlan:
    """Return the checked deployment of ``source``: every problem found is reported at once (the
    options, the archive in S3, the image in ECR, a role, objects under --batch-input).

    Raises:
        SageMakerEnvironmentError: listing every problem.
    """
    from model_lib.sagemaker import launch

    job = source.job or {}
    image = options.image_uri or job.get("AlgorithmSpecification", {}).get("TrainingImage")
    role = options.role_arn or job.get("RoleArn")
    problems = options.problems()
    if not image:
        problems.append(f"{source.origin}: no training job claims this archive, so no image: pass --image-uri")
    if not role:
        problems.append(f"{source.origin}: no training job claims this archive, so no role: pass --role-arn")
    if not problems:  # asked of AWS only when the options are right
        s3 = boto_session.client("s3")
        found = [
            _object_problem(source.model_data, "model archive", s3),
            launch.image_problem(str(image), boto_session.client("ecr")),
        ]
        if options.batch_input is not None:
            found.append(_batch_input_problem(options.batch_input, s3))
        problems += [problem for problem in found if problem]
    launch.raise_if_any(problems, "the deployment")
    return DeployPlan(source, options, str(image), str(role))


def _existing(call: Callable[..., Any], **name: str) -> dict[str, Any] | None:
    """Return what a Describe* ``call`` answers for ``name``, or None when there is no such resource."""
    from botocore.exceptions import ClientError

    try:
        return dict(call(**name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def requests(deployment: DeployPlan, client: Any) -> list[dict[str, Any]]:
    """Return the requests that bring SageMaker to ``deployment``, in order, as
    ``{"Operation": ..., "Request": ...}`` (what exists already is reused; nothing is sent).

    Raises:
        ConfigError: the endpoint exists and --update was not given; the transform job exists.
    """
    steps = []
    if _existing(client.describe_model, ModelName=deployment.model_name) is None:
        steps.append(("CreateModel", deployment.model_request()))
    if deployment.options.batch:
        name = deployment.transform_name
        existing = _existing(client.describe_transform_job, TransformJobName=name)
        if existing is not None:
            raise ConfigError(
                f"transform job {name} exists ({existing['TransformJobStatus']}): this model already ran over "
                f"{deployment.options.batch_input} into {deployment.options.batch_output}; pass another --batch-output"
            )
        steps.append(("CreateTransformJob", deployment.transform_request()))
        return [{"Operation": op, "Request": request} for op, request in steps]
    if _existing(client.describe_endpoint_config, EndpointConfigName=deployment.config_name) is None:
        steps.append(("CreateEndpointConfig", deployment.endpoint_config_request()))
    endpoint = _existing(client.describe_endpoint, EndpointName=deployment.endpoint_name)
    if endpoint is None:
        steps.append(("CreateEndpoint", deployment.endpoint_request()))
    elif not deployment.options.update:
        status, config = endpoint["EndpointStatus"], endpoint["EndpointConfigName"]
        raise ConfigError(
            f"endpoint {deployment.endpoint_name} exists ({status}, config {config}): "
            f"pass --update to move it to model {deployment.model_name}, or another --endpoint-name"
        )
    elif endpoint["EndpointConfigName"] != deployment.config_name:
        steps.append(("UpdateEndpoint", deployment.update_request()))
    return [{"Operation": op, "Request": request} for op, request in steps]


def send(deployment: DeployPlan, boto_session: Any, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Send the :func:`requests` of ``deployment`` (checked against SageMaker's API model first);
    return them as sent, or with ``dry_run`` unsent.

    Raises:
        ConfigError: see :func:`requests`.
        SageMakerEnvironmentError: a request SageMaker's API model refuses (botocore's check).
    """
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    client = jobs.sagemaker_client(boto_session)
    steps = requests(deployment, client)
    for step in steps:
        try:
            validate_parameters(step["Request"], client.meta.service_model.operation_model(step["Operation"]).input_shape)
        except ParamValidationError as exc:
            raise SageMakerEnvironmentError(f"{step['Operation']}: {exc}") from None
    if not dry_run:
        for step in steps:
            method = re.sub(r"(?<!^)(?=[A-Z])", "_", step["Operation"]).lower()
            getattr(client, method)(**step["Request"])
            logger.info("sent %s", step["Operation"])
    return json.loads(json.dumps(steps, default=str))


def follow(
    deployment: DeployPlan, boto_session: Any, *, poll_seconds: float = 30.0, report: Callable[[str], None] = print
) -> dict[str, Any]:
    """Poll the endpoint (DescribeEndpoint until InService, Failed or OutOfService, after an update
    once it serves the new config or has been through Updating) or the transform job (DescribeTransformJob until
    Completed, Failed or Stopped), reporting each status change; return the last description."""
    client = jobs.sagemaker_client(boto_session)
    if deployment.options.batch:
        name, status_key, ended = deployment.transform_name, "TransformJobStatus", TRANSFORM_TERMINAL

        def describe() -> dict[str, Any]:
            return dict(client.describe_transform_job(TransformJobName=name))
    else:
        name, status_key, ended = deployment.endpoint_name, "EndpointStatus", ENDPOINT_TERMINAL

        def describe() -> dict[str, Any]:
            return dict(client.describe_endpoint(EndpointName=name))

    seen, changing = None, False
    while True:
        described = describe()
        status = described[status_key]
        if status != seen:
            report(f"{time.strftime('%H:%M:%S')} {name}: {status}")
            seen = status
        changing = changing or status not in ended  # an update rolled back ends InService on the old config
        moved = deployment.options.batch or described.get("EndpointConfigName") == deployment.config_name
        if status in ended and (moved or changing):
            return described
        time.sleep(poll_seconds)


__all__ = ["DeployPlan", "Source", "derived_name", "follow", "parse_environment", "plan", "requests", "send", "source_of"]
