"""One SageMaker training job seen from outside: its status until it ends, its log lines, its output archive.

Everything that follows a job (``model-lib launch --wait``, the remote train stage) goes through here,
and stays light: boto3 only, no TensorFlow, no data.
"""

from __future__ import annotations

import datetime
import logging
import tarfile
import time
from collections.abc import Callable, Collection
from typing import Any

from model_lib.errors import SageMakerEnvironmentError

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")  # a job in one of these has ended for good
RETRIED_STATUSES = ("Failed", "Stopped")  # ended without a model: a new attempt may train these inputs
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# What the entry point writes to SM_MODEL_DIR, so model.tar.gz holds: the raw-string model and its summary.
MODEL_FILE = "model.keras"
SUMMARY_FILE = "metrics.json"
# botocore's own retries (the "standard" mode: throttling, 5xx and connection errors, exponential
# backoff with jitter) for the calls that follow a job; only what follows when they give up is ours.
FOLLOW_RETRIES = {"mode": "standard", "max_attempts": 8}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Return (bucket, key) of ``s3://bucket/key`` (the key may be empty or a prefix).

    Raises:
        SageMakerEnvironmentError: if ``uri`` is not an s3:// URI with a bucket.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise SageMakerEnvironmentError(f"{uri!r}: expected s3://bucket/key")
    return bucket, key


def sagemaker_client(boto_session: Any) -> Any:
    """Return a SageMaker client of ``boto_session`` that retries as :data:`FOLLOW_RETRIES` says
    (it honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER as every boto3 client does)."""
    from botocore.config import Config

    return boto_session.client("sagemaker", config=Config(retries=FOLLOW_RETRIES))


def describe(client: Any, name: str) -> dict[str, Any] | None:
    """Return DescribeTrainingJob of ``name``, or None when there is no such job.

    Raises:
        botocore.exceptions.ClientError: for any other refusal.
    """
    from botocore.exceptions import ClientError

    try:
        return dict(client.describe_training_job(TrainingJobName=name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None  # SageMaker answers an unknown name with a ValidationException
        raise


def capacity_failure(described: dict[str, Any]) -> str | None:
    """Return the failure reason of a job that ended Failed or Stopped for lack of capacity (its reason
    says "capacity", as SageMaker's ``CapacityError: Unable to provision requested ML compute capacity``
    and ``InsufficientCapacityError`` do), else None."""
    reason = described.get("FailureReason") or ""
    if described.get("TrainingJobStatus") in RETRIED_STATUSES and "capacity" in reason.lower():
        return str(reason)
    return None


def never_left_starting(described: dict[str, Any]) -> bool:
    """Return whether a Stopped job was stopped before it ever got instances (no secondary status
    after Starting but the stop's own)."""
    reached = {step.get("Status") for step in described.get("SecondaryStatusTransitions", [])}
    return described.get("TrainingJobStatus") == "Stopped" and reached <= {"Starting", "Stopping", "Stopped"}


def seconds_in_starting(described: dict[str, Any], now: datetime.datetime | None = None) -> float:
    """Return how long an InProgress job has been in secondary status Starting (0 when it is past it)."""
    if described.get("TrainingJobStatus") != "InProgress" or described.get("SecondaryStatus") != "Starting":
        return 0.0
    steps = described.get("SecondaryStatusTransitions") or [{}]
    since = steps[-1].get("StartTime") or described["CreationTime"]
    return ((now or datetime.datetime.now(datetime.UTC)) - since).total_seconds()


def waited_for_capacity(described: dict[str, Any], bound: float) -> bool:
    """Return whether a spot job has waited in Starting (for capacity) more than ``bound`` seconds."""
    return bool(described.get("EnableManagedSpotTraining")) and seconds_in_starting(described) > bound


def spot_fallback_reason(described: dict[str, Any]) -> str | None:
    """Return why an on-demand job should follow the spot job ``described``: ``"failed for capacity:
    <reason>"`` or ``"was stopped in Starting (no capacity)"``; None for any other job or end."""
    if not described.get("EnableManagedSpotTraining"):
        return None
    capacity = capacity_failure(described)
    if capacity is not None:
        return f"failed for capacity: {capacity}"
    return "was stopped in Starting (no capacity)" if never_left_starting(described) else None


def status_of(described: dict[str, Any]) -> str:
    """Return the status a person reads: ``"<TrainingJobStatus> / <SecondaryStatus>"``."""
    return f"{described['TrainingJobStatus']} / {described.get('SecondaryStatus', '')}"


class JobLogs:
    """The job's CloudWatch log events not handed on yet, in order (nothing while there are none)."""

    def __init__(self, boto_session: Any, job_name: str) -> None:
        self._client = boto_session.client("logs")
        self._job = job_name
        self._seen: set[str] = set()
        self._since = 0

    def new_lines(self) -> list[str]:
        """Return the messages that arrived since the last call (none when the log group is not there yet)."""
        lines: list[str] = []
        try:
            pages = self._client.get_paginator("filter_log_events").paginate(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self._job}/", startTime=self._since
            )
            for page in pages:
                for event in page.get("events", []):
                    if event["eventId"] not in self._seen:
                        self._seen.add(event["eventId"])
                        self._since = max(self._since, int(event["timestamp"]))
                        lines.append(event["message"].rstrip())
        except Exception as exc:  # no log group yet, or no permission: the status still says enough
            logger.debug("no logs for %s: %s", self._job, exc)
        return lines


def follow(
    job_name: str,
    boto_session: Any,
    *,
    poll_seconds: float = 30.0,
    on_status: Callable[[str], None] = print,
    on_log: Callable[[str], None] | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Follow the job until it ends (or, when given, ``until`` of its description is true); return
    its last description.

    ``on_status`` gets ``"HH:MM:SS <job>: <status> / <secondary status>"`` at each change; ``on_log``,
    when given, each new line of the job's CloudWatch log.

    Raises:
        botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: when SageMaker could not
            be asked, botocore's retries included (the job itself is not touched).
    """
    client = sagemaker_client(boto_session)
    logs = JobLogs(boto_session, job_name) if on_log is not None else None
    seen = None
    while True:
        described = dict(client.describe_training_job(TrainingJobName=job_name))
        status = status_of(described)
        if status != seen:
            on_status(f"{time.strftime('%H:%M:%S')} {job_name}: {status}")
            seen = status
        if logs is not None and on_log is not None:
            for line in logs.new_lines():
                on_log(line)
        if described["TrainingJobStatus"] in TERMINAL_STATUSES or (until is not None and until(described)):
            return described
        time.sleep(poll_seconds)


def stop(boto_session: Any, job_name: str) -> None:
    """StopTrainingJob ``job_name``; one that ended meanwhile (SageMaker refuses to stop it) is left as it is."""
    from botocore.exceptions import ClientError

    try:
        sagemaker_client(boto_session).stop_training_job(TrainingJobName=job_name)
    except ClientError as exc:
        logger.info("did not stop %s: %s", job_name, exc)


def output_uri(described: dict[str, Any]) -> str:
    """Return where SageMaker puts a described job's outputs: ``<S3OutputPath>/<job name>/output``
    (model.tar.gz goes there)."""
    return f"{described['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{described['TrainingJobName']}/output"


def model_artifacts(described: dict[str, Any]) -> str | None:
    """Return the S3 URI of a described job's model.tar.gz, or None when it has none."""
    uri = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    return str(uri) if uri else None


def read_archive(uri: str, boto_session: Any, names: Collection[str]) -> dict[str, bytes]:
    """Return the files ``names`` (those found) from the .tar.gz at ``uri``, streamed from S3.

    Member names are compared without a leading ``./`` (SageMaker's model.tar.gz has none; a tar
    made with ``tar -C dir .`` has it).

    Raises:
        SageMakerEnvironmentError: if ``uri`` is not an s3:// URI.
        botocore.exceptions.ClientError: if the object cannot be read.
        tarfile.TarError: if it is not a .tar.gz.
    """
    import io

    bucket, key = split_s3_uri(uri)
    body = boto_session.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BufferedReader(body), mode="r|gz") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in names and member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    found[name] = handle.read()
    return found
