"""What ``model-lib deploy`` does: resolve the source, check, send (or print) the requests, and with
``--wait`` follow the endpoint or the transform job to its end (:mod:`model_lib.sagemaker.deploy`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from model_lib.sagemaker.deploy_options import DeployOptions


def _report(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace, options: DeployOptions) -> int:
    """Run ``model-lib deploy`` with its parsed ``args`` and ``options``; return the exit code (0: sent,
    printed, or with --wait InService / Completed; 1: with --wait, it ended otherwise).

    Raises:
        ConfigError, SageMakerEnvironmentError: for a bad source or option, or what the checks find.
    """
    import boto3

    from model_lib.environ import seconds_from_env
    from model_lib.sagemaker import deploy, launch, remote

    poll = seconds_from_env(remote.POLL_SECONDS_ENV, remote.DEFAULT_POLL_SECONDS, positive=True)
    launch.raise_if_any(options.problems(), "the deployment")  # before anything is asked of AWS or MLflow
    session = boto3.Session()
    deployment = deploy.plan(deploy.source_of(args.source, args.job, session), options, session)
    sent = deploy.send(deployment, session, dry_run=args.dry_run)
    if args.dry_run:
        print(json.dumps(sent, indent=2, sort_keys=True))
        return 0
    _report(_started_line(deployment, sent))
    if not args.wait:
        return 0
    described = deploy.follow(deployment, session, poll_seconds=poll, report=_report)
    return _outcome(deployment, described)


def _started_line(deployment: Any, sent: list[dict[str, Any]]) -> str:
    sent_names = ", ".join(step["Operation"] for step in sent) or "nothing: it is deployed already"
    if deployment.options.batch:
        return f"deploy: transform job {deployment.transform_name} (model {deployment.model_name}; sent {sent_names})"
    names = f"model {deployment.model_name}, config {deployment.config_name}"
    return f"deploy: endpoint {deployment.endpoint_name} ({names}; sent {sent_names})"


def _outcome(deployment: Any, described: dict[str, Any]) -> int:
    reason = f"\n  failure: {described['FailureReason']}" if described.get("FailureReason") else ""
    if deployment.options.batch:
        status = described["TransformJobStatus"]
        _report(f"deploy: transform job {deployment.transform_name} {status} -> {deployment.options.batch_output}{reason}")
        return 0 if status == "Completed" else 1
    status, config = described["EndpointStatus"], described.get("EndpointConfigName")
    if status == "InService" and config != deployment.config_name:
        _report(f"deploy: endpoint {deployment.endpoint_name} InService on config {config}: the update rolled back{reason}")
        return 1
    _report(f"deploy: endpoint {deployment.endpoint_name} {status}{reason}")
    if status == "InService":
        _report(
            f"  try it: aws sagemaker-runtime invoke-endpoint --endpoint-name {deployment.endpoint_name} "
            "--content-type text/plain --body 'a wonderful film' --cli-binary-format raw-in-base64-out /dev/stdout"
        )
    return 0 if status == "InService" else 1
