"""The options of ``model-lib deploy``: where the model goes (a real-time endpoint, serverless, a batch
transform) and on what. Standard library only, as :mod:`model_lib.sagemaker.options`: ``model_lib.cli``
builds its parser from these fields for every command.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from model_lib.sagemaker.options import LaunchOptions

# SageMaker's own bounds (CreateEndpointConfig's ServerlessConfig: MemorySizeInMB 1024..6144 in 1 GB
# steps, MaxConcurrency 1..200).
SERVERLESS_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
# What a batch transform sends the serving container: one review per line, as text or as CSV.
BATCH_CONTENT_TYPES = ("text/plain", "text/csv")
# A Model, EndpointConfig, Endpoint or TransformJob name: SageMaker's rule.
RESOURCE_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_S3_PREFIX = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")


def _option(default: Any, help: str, metavar: str | None = None) -> Any:
    """A DeployOptions field that is also a flag of ``model-lib deploy``: ``--<name-with-dashes>``."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class DeployOptions:
    """Where and how the model is served; every field has the default ``model-lib deploy`` uses."""

    image_uri: str | None = _option(
        None, "serving image (default: the training job's TrainingImage: the same image holds `serve`)"
    )
    role_arn: str | None = _option(None, "execution role of the SageMaker model (default: the training job's RoleArn)")
    instance_type: str = _option("ml.m5.large", "instance type of the endpoint or the transform job (default: ml.m5.large)")
    instance_count: int = _option(1, "instances of the endpoint (initial count) or the transform job (default 1)")
    serverless_memory: int | None = _option(
        None,
        "a serverless endpoint of MB memory (1024..6144, a multiple of 1024) instead of instances",
        metavar="MB",
    )
    max_concurrency: int = _option(5, "with --serverless-memory: concurrent invocations, 1..200 (default 5)", metavar="N")
    endpoint_name: str | None = _option(
        None,
        "endpoint name (default: derived from the source: <registered name>-v<N>, or the training job's name)",
        metavar="NAME",
    )
    update: bool = _option(
        False, "the endpoint exists: move it to this model (UpdateEndpoint) instead of refusing; nothing else changes"
    )
    batch_input: str | None = _option(
        None, "run a batch transform over every object under this S3 prefix (one review per line) instead", metavar="S3URI"
    )
    batch_output: str | None = _option(None, "with --batch-input: where the transform writes <input object>.out", metavar="S3URI")
    content_type: str = _option(
        "text/plain", "with --batch-input: the input's ContentType, text/plain or text/csv (default: text/plain)"
    )
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)  # --env KEY=VALUE (repeatable)

    @property
    def batch(self) -> bool:
        """Return whether these options ask for a batch transform (not an endpoint)."""
        return self.batch_input is not None or self.batch_output is not None

    @property
    def serverless(self) -> bool:
        return self.serverless_memory is not None

    def problems(self) -> list[str]:
        """Return what is wrong with these options, one line each naming the flag, the value and what
        was expected: image, role, instance type and count as ``model-lib launch`` checks them; the
        serverless bounds; the endpoint name; flags of an endpoint given with a batch transform (and
        the other way round); the batch S3 URIs and content type."""
        shared = LaunchOptions(
            image_uri=self.image_uri, role_arn=self.role_arn, instance_type=self.instance_type, instance_count=self.instance_count
        )
        problems = shared.problems()  # the same forms and bounds as launch's, so the same messages
        if self.serverless_memory is not None and self.serverless_memory not in SERVERLESS_MEMORY_SIZES:
            sizes = ", ".join(str(size) for size in SERVERLESS_MEMORY_SIZES)
            problems.append(f"--serverless-memory {self.serverless_memory}: expected one of {sizes} (MB)")
        if not 1 <= self.max_concurrency <= MAX_SERVERLESS_CONCURRENCY:
            problems.append(f"--max-concurrency {self.max_concurrency}: expected 1..{MAX_SERVERLESS_CONCURRENCY}")
        if self.endpoint_name is not None and not RESOURCE_NAME.fullmatch(self.endpoint_name):
            problems.append(
                f"--endpoint-name {self.endpoint_name!r}: expected 1-63 letters, digits and '-', not starting with '-'"
            )
        problems += self._combination_problems()
        if self.batch:
            problems += self._batch_problems()
        return problems

    def _combination_problems(self) -> list[str]:
        default = DeployOptions()
        problems = []
        if self.serverless:
            if self.instance_type != default.instance_type or self.instance_count != default.instance_count:
                problems.append("--serverless-memory: a serverless endpoint has no instances (--instance-type, --instance-count)")
        elif self.max_concurrency != default.max_concurrency:
            problems.append(f"--max-concurrency {self.max_concurrency}: needs --serverless-memory")
        if not self.batch and self.content_type != default.content_type:
            problems.append(f"--content-type {self.content_type}: needs --batch-input (an endpoint takes what each request says)")
        if self.batch:
            endpoint_flags = [
                flag
                for flag, given in (
                    ("--serverless-memory", self.serverless),
                    ("--endpoint-name", self.endpoint_name is not None),
                    ("--update", self.update),
                )
                if given
            ]
            if endpoint_flags:
                problems.append(f"{', '.join(endpoint_flags)}: endpoint options; a batch transform (--batch-input) has none")
        return problems

    def _batch_problems(self) -> list[str]:
        problems = []
        for flag, uri in (("--batch-input", self.batch_input), ("--batch-output", self.batch_output)):
            if uri is None:
                other = "--batch-output" if flag == "--batch-input" else "--batch-input"
                problems.append(f"{other}: needs {flag} s3://<bucket>/<prefix>/ too")
            elif not _S3_PREFIX.fullmatch(uri):
                problems.append(f"{flag} {uri!r}: expected s3://<bucket>/<prefix>/")
        if self.content_type not in BATCH_CONTENT_TYPES:
            problems.append(f"--content-type {self.content_type!r}: expected one of {', '.join(BATCH_CONTENT_TYPES)}")
        return problems


__all__ = ["BATCH_CONTENT_TYPES", "RESOURCE_NAME", "SERVERLESS_MEMORY_SIZES", "DeployOptions"]
