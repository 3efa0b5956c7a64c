"""A proxy in front of a moto server's SageMaker API that makes training-job status realistic, for tests.

moto reports every training job as ``Completed`` the moment CreateTrainingJob is called. Our tests run the
recorded job locally (``model-lib sagemaker-local --job NAME``), and whatever runs it (the test's stand-in
for SageMaker's workers) tells this proxy how the job ended, through the proxy's own API: ``POST
/_standin/end-training-job`` with ``{"TrainingJobName": ..., "status": "Completed"|"Failed"|"Stopped",
"exit_code": N, "seconds": S, "failure": "text or null"}`` (:func:`report_end`; :func:`status_for_exit`
maps a container's exit code to the status SageMaker gives it). This proxy forwards every SageMaker request
(AWS JSON protocol: ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>``) to moto unchanged and relays
the answer, except:

* ``DescribeTrainingJob``: until the job's end is reported, the job is ``InProgress`` (secondary status
  Starting, then Downloading, then Training, by the time since CreationTime), without TrainingEndTime,
  ModelArtifacts or FailureReason. After: its status, with TrainingTimeInSeconds/BillableTimeInSeconds from
  its ``seconds``, FailureReason from its ``failure`` when Failed, TrainingEndTime at the report, and
  ModelArtifacts only when Completed. The MetricDefinitions moto overwrites with its own are put back as
  CreateTrainingJob (through this proxy) gave them.
* ``ListTrainingJobs``: each summary's status (and TrainingEndTime) patched the same way; ``StatusEquals``
  filters on the patched status, not on moto's.
* ``StopTrainingJob`` (moto 5.2 does not implement it: it answers 500): the job name is appended to
  ``--stop-requests-file`` and, until its end is reported, the job is described as ``Stopping``. As
  SageMaker, an unknown job or one that has ended is refused with ``ValidationException``.

Point clients at it with ``AWS_ENDPOINT_URL_SAGEMAKER=http://127.0.0.1:PORT`` (and ``AWS_ENDPOINT_URL`` at
moto for everything else). Run it as ``python -m tests.standins.sagemaker_status --listen-port 0 --upstream
http://127.0.0.1:5000`` from the repository root, or from a test with :func:`start_status_proxy` /
:func:`stop_status_proxy` (or :func:`status_proxy`). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from model_lib.sagemaker.jobs import TERMINAL_STATUSES
from tests.standins.auth_proxy import HOP_BY_HOP, serve_until_stopped, start_listening, stop_auth_proxy

REPO = Path(__file__).resolve().parents[2]
TARGET_PREFIX = "SageMaker."
END_PATH = "/_standin/end-training-job"  # the proxy's own API: how a job ended
MAX_FAILURE_REASON = 1024
STARTING_SECONDS = 1.0  # secondary status Starting for this long after CreationTime, then Downloading
DOWNLOADING_SECONDS = 1.0  # then Training
JSON_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class Settings:
    upstream: str
    stop_requests_file: str | None = None
    verbose: bool = False
    upstream_timeout: float = 60.0


@dataclass(frozen=True)
class Upstream:
    """One answer from moto: status, headers (as http.client gives them) and body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")


class State:
    """What the proxy remembers across requests: stop requests and the metric definitions given at create."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped_at: dict[str, float] = {}
        self.metric_definitions: dict[str, list[dict[str, Any]] | None] = {}
        self.ended: dict[str, tuple[dict[str, Any], float]] = {}  # job name -> (its reported end, when)


@functools.cache
def moto_stops_training_jobs() -> bool:
    """Whether the installed moto implements StopTrainingJob (5.2 does not)."""
    try:
        from moto.sagemaker.responses import SageMakerResponse
    except ImportError:
        return False
    return hasattr(SageMakerResponse, "stop_training_job")


def status_for_exit(exit_code: int) -> str:
    """The status SageMaker gives a job whose container exited with ``exit_code``: 0 Completed, 143
    (SIGTERM: a stop or a spot reclaim) Stopped, anything else Failed."""
    return "Completed" if exit_code == 0 else ("Stopped" if exit_code == 128 + 15 else "Failed")


def parse_end(body: bytes) -> tuple[str, dict[str, Any]]:
    """The job name and end of an end-training-job request; ValueError when it is not one."""
    request = json.loads(body or b"{}")
    if not isinstance(request, dict) or not isinstance(request.get("TrainingJobName"), str):
        raise ValueError("expected a JSON object with TrainingJobName")
    if request.get("status") not in TERMINAL_STATUSES:
        raise ValueError(f"status: expected one of {TERMINAL_STATUSES}, got {request.get('status')!r}")
    values = {key: request.get(key) for key in ("status", "exit_code", "seconds", "failure")}
    return request["TrainingJobName"], values


def log(message: str) -> None:
    sys.stderr.write(f"sagemaker-status: {message}\n")
    sys.stderr.flush()


def _t(value: float) -> float:
    return round(value, 3)


def _transitions(created: float, now: float, end: float | None = None) -> tuple[list[dict[str, Any]], str, float]:
    """Starting -> Downloading -> Training up to ``now`` (or ``end``): the transitions, the current
    secondary status and when it began."""
    until = now if end is None else end
    steps = [
        ("Starting", "Preparing the instances for training"),
        ("Downloading", "Downloading input data"),
        ("Training", "Training image download completed. Training in progress."),
    ]
    starts = [created, created + STARTING_SECONDS, created + STARTING_SECONDS + DOWNLOADING_SECONDS]
    if end is not None:  # an ended job went through them all, however quickly
        starts = [min(s, end) for s in starts]
        reached = steps
    else:
        reached = [step for step, start in zip(steps, starts) if start <= until] or steps[:1]
    result = []
    for i, (name, message) in enumerate(reached):
        item: dict[str, Any] = {"Status": name, "StartTime": _t(starts[i]), "StatusMessage": message}
        if i + 1 < len(reached):
            item["EndTime"] = _t(starts[i + 1])
        elif end is not None:
            item["EndTime"] = _t(end)
        result.append(item)
    return result, reached[-1][0], starts[len(reached) - 1]


def _step(status: str, start: float, end: float | None, message: str) -> dict[str, Any]:
    step: dict[str, Any] = {"Status": status, "StartTime": _t(start), "StatusMessage": message}
    if end is not None:
        step["EndTime"] = _t(end)
    return step


def patch_description(
    job: dict[str, Any], status: tuple[dict[str, Any], float] | None, stopped_at: float | None, now: float
) -> dict[str, Any]:
    """moto's DescribeTrainingJob answer made to agree with the job's reported end (None: not reported yet)."""
    job = dict(job)
    created = float(job.get("CreationTime") or now)
    if status is None:
        for name in ("TrainingEndTime", "ModelArtifacts", "FailureReason", "TrainingTimeInSeconds", "BillableTimeInSeconds"):
            job.pop(name, None)
        job.pop("FinalMetricDataList", None)
        transitions, secondary, since = _transitions(created, now)
        if secondary == "Starting":
            job.pop("TrainingStartTime", None)
        else:
            job["TrainingStartTime"] = _t(created + STARTING_SECONDS)
        job["TrainingJobStatus"] = "InProgress"
        if stopped_at is not None:
            transitions[-1]["EndTime"] = _t(max(stopped_at, transitions[-1]["StartTime"]))
            transitions.append(_step("Stopping", stopped_at, None, "Stopping the training job"))
            job["TrainingJobStatus"] = secondary = "Stopping"
            since = stopped_at
        job["SecondaryStatus"] = secondary
        job["SecondaryStatusTransitions"] = transitions
        job["LastModifiedTime"] = _t(since)
        return job

    values, end = status
    state = values["status"]
    end = max(end, created)
    transitions, _, _ = _transitions(created, now, end)
    job["TrainingJobStatus"] = job["SecondaryStatus"] = state
    job["TrainingStartTime"] = _t(min(created + STARTING_SECONDS, end))
    job["TrainingEndTime"] = job["LastModifiedTime"] = _t(end)
    try:
        seconds = int(float(values.get("seconds") or 0))
    except (TypeError, ValueError):
        seconds = 0
    job["TrainingTimeInSeconds"] = job["BillableTimeInSeconds"] = seconds
    job.pop("FailureReason", None)
    if state != "Completed":
        job.pop("ModelArtifacts", None)
    if state == "Completed":
        transitions.append(_step("Uploading", end, end, "Uploading generated training model"))
        transitions.append(_step("Completed", end, end, "Training job completed"))
    elif state == "Failed":
        failure = values.get("failure")
        reason = str(failure) if failure else f"AlgorithmError: training exited with code {values.get('exit_code')}"
        job["FailureReason"] = reason[:MAX_FAILURE_REASON]
        transitions.append(_step("Failed", end, end, reason[:MAX_FAILURE_REASON]))
    else:
        begun = max(min(stopped_at if stopped_at is not None else end, end), transitions[-1]["StartTime"])
        transitions[-1]["EndTime"] = _t(begun)
        transitions.append(_step("Stopping", begun, end, "Stopping the training job"))
        transitions.append(_step("Stopped", end, end, "Training job stopped"))
    job["SecondaryStatusTransitions"] = transitions
    return job


def patched(job: dict[str, Any], state: State) -> dict[str, Any]:
    """moto's description of ``job`` as the proxy's ``state`` says it is now (see :func:`patch_description`)."""
    name = job["TrainingJobName"]
    with state.lock:
        status = state.ended.get(name)
        stopped_at = state.stopped_at.get(name)
        known = name in state.metric_definitions
        definitions = state.metric_definitions.get(name)
    job = patch_description(job, status, stopped_at, time.time())
    if known and isinstance(job.get("AlgorithmSpecification"), dict):
        job["AlgorithmSpecification"] = dict(job["AlgorithmSpecification"])
        if definitions is None:
            job["AlgorithmSpecification"].pop("MetricDefinitions", None)
        else:
            job["AlgorithmSpecification"]["MetricDefinitions"] = definitions
    return job


class StatusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sagemaker-status"
    timeout = 600  # an idle keep-alive connection is closed after this
    settings: Settings  # set on the subclass made in serve()
    state: State
    file_lock = threading.Lock()

    def do_POST(self) -> None:
        body = self._read_body()
        operation = (self.headers.get("X-Amz-Target") or "").removeprefix(TARGET_PREFIX)
        try:
            if self.path == END_PATH:
                self.end(body)
            elif operation == "DescribeTrainingJob":
                self.describe(body)
            elif operation == "ListTrainingJobs":
                self.list_jobs(body)
            elif operation == "StopTrainingJob":
                self.stop(body)
            else:
                if operation == "CreateTrainingJob":
                    self.remember_create(body)
                self.reply(self.upstream(body, identity=False))
        except OSError as error:
            self.upstream_failed(error)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    # --- wire ---------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            pieces = []
            while size := int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16):
                pieces.append(self.rfile.read(size))
                self.rfile.readline(65537)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(pieces)
        try:
            length = max(int(self.headers.get("Content-Length") or 0), 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length else b""

    def _forward_headers(self, length: int, target: str | None, identity: bool) -> list[tuple[str, str]]:
        listed = {n.strip().lower() for n in (self.headers.get("Connection") or "").split(",")}
        drop = HOP_BY_HOP | listed | {"host", "content-length", "expect"}  # this proxy has answered any Expect
        if target is not None:
            drop |= {"x-amz-target"}
        if identity:  # an answer this proxy reads and rewrites must not come compressed
            drop |= {"accept-encoding"}
        kept = [(k, v) for k, v in self.headers.items() if k.lower() not in drop]
        if target is not None:
            kept.append(("X-Amz-Target", TARGET_PREFIX + target))
        kept.append(("Host", urlsplit(self.settings.upstream).netloc))
        kept.append(("Content-Length", str(length)))
        if identity:
            kept.append(("Accept-Encoding", "identity"))
        return kept

    def upstream(self, body: bytes, operation: str | None = None, *, identity: bool = True) -> Upstream:
        """Send ``body`` to moto as this request (or, with ``operation``, as that SageMaker operation,
        with this request's credentials); ``identity``: ask for an uncompressed answer."""
        parts = urlsplit(self.settings.upstream)
        path = parts.path.rstrip("/") + (self.path if operation is None else "/")
        method = self.command if operation is None else "POST"
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.settings.upstream_timeout
        )
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in self._forward_headers(len(body), operation, identity):
                connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            return Upstream(response.status, response.reason, response.getheaders(), data)
        finally:
            connection.close()

    def reply(self, answer: Upstream, body: bytes | None = None) -> None:
        data = answer.body if body is None else body
        listed = {n.strip().lower() for n in (dict((k.lower(), v) for k, v in answer.headers).get("connection") or "").split(",")}
        self.send_response_only(answer.status, answer.reason)
        for name, value in answer.headers:
            if name.lower() not in HOP_BY_HOP | listed | {"content-length", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if self.settings.verbose:
            log(f"{self.headers.get('X-Amz-Target')} -> {answer.status}")

    def reply_json(self, status: int, payload: dict[str, Any], error_type: str | None = None) -> None:
        data = json.dumps(payload).encode()
        headers = [("Content-Type", JSON_TYPE), ("x-amzn-RequestId", f"sagemaker-status-{time.time_ns()}")]
        if error_type:
            headers.append(("x-amzn-ErrorType", error_type))
        self.reply(Upstream(status, http.client.responses.get(status, ""), headers, data))

    def validation_error(self, message: str) -> None:
        self.reply_json(400, {"__type": "ValidationException", "Message": message}, "ValidationException")

    def upstream_failed(self, error: OSError) -> None:
        log(f"upstream failed for {self.headers.get('X-Amz-Target')}: {error!r}")
        self.close_connection = True
        self.reply_json(
            502, {"__type": "ServiceUnavailable", "Message": f"sagemaker-status: upstream: {error}"}, "ServiceUnavailable"
        )

    # --- SageMaker ----------------------------------------------------------------------------
    def end(self, body: bytes) -> None:
        try:
            name, values = parse_end(body)
        except ValueError as error:
            self.validation_error(f"sagemaker-status: {error}")
            return
        with self.state.lock:
            self.state.ended[name] = (values, time.time())
        log(f"{name} ended {values['status']}")
        self.reply_json(200, {})

    def remember_create(self, body: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError, KeyError):
            request = json.loads(body)
            definitions = (request.get("AlgorithmSpecification") or {}).get("MetricDefinitions")
            with self.state.lock:
                self.state.metric_definitions[request["TrainingJobName"]] = definitions
                self.state.stopped_at.pop(request["TrainingJobName"], None)
                self.state.ended.pop(request["TrainingJobName"], None)

    def describe(self, body: bytes) -> None:
        answer = self.upstream(body)
        if answer.status != 200:
            self.reply(answer)
            return
        self.reply(answer, json.dumps(patched(answer.json(), self.state)).encode())

    def list_jobs(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self.reply(self.upstream(body))
            return
        wanted = request.pop("StatusEquals", None)
        answer = self.upstream(json.dumps(request).encode() if wanted is not None else body)
        if answer.status != 200:
            self.reply(answer)
            return
        listing = answer.json()
        summaries = []
        for summary in listing.get("TrainingJobSummaries", []):
            described = self.upstream(json.dumps({"TrainingJobName": summary["TrainingJobName"]}).encode(), "DescribeTrainingJob")
            if described.status != 200:
                summaries.append(summary)
                continue
            job = patched(described.json(), self.state)
            summary = {k: v for k, v in summary.items() if k != "TrainingEndTime"}
            for name in ("TrainingJobStatus", "LastModifiedTime", "TrainingEndTime"):
                if name in job:
                    summary[name] = job[name]
            if wanted is None or summary["TrainingJobStatus"] == wanted:
                summaries.append(summary)
        listing["TrainingJobSummaries"] = summaries
        self.reply(answer, json.dumps(listing).encode())

    def stop(self, body: bytes) -> None:
        try:
            name = json.loads(body or b"{}")["TrainingJobName"]
        except (ValueError, KeyError, TypeError):
            self.validation_error("1 validation error detected: Value null at 'trainingJobName' failed to satisfy constraint")
            return
        described = self.upstream(json.dumps({"TrainingJobName": name}).encode(), "DescribeTrainingJob")
        if described.status != 200:
            self.reply(described)
            return
        job = patched(described.json(), self.state)
        if job["TrainingJobStatus"] in TERMINAL_STATUSES:
            self.validation_error(f"The request was rejected because the training job is in status {job['TrainingJobStatus']}.")
            return
        with self.state.lock:
            self.state.stopped_at.setdefault(name, time.time())
        if self.settings.stop_requests_file:
            with self.file_lock, open(self.settings.stop_requests_file, "a", encoding="utf-8") as handle:
                handle.write(name + "\n")
        log(f"StopTrainingJob {name} recorded")
        if moto_stops_training_jobs():
            self.reply(self.upstream(body))
        else:
            self.reply_json(200, {})

    def log_message(self, format: str, *args: Any) -> None:
        if self.settings.verbose:
            super().log_message(format, *args)


def serve(settings: Settings, port: int) -> int:
    """Serve on 127.0.0.1:``port`` (0: any free port) until SIGTERM or SIGINT; return the exit status."""
    return serve_until_stopped(type("Handler", (StatusHandler,), {"settings": settings, "state": State()}), port)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, int]:
    parser = argparse.ArgumentParser(prog="python -m tests.standins.sagemaker_status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--upstream", required=True, help="the moto server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--stop-requests-file", help="append the job name of each StopTrainingJob request")
    parser.add_argument("--upstream-timeout", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    upstream = urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        parser.error("--upstream must be an http:// URL")
    settings = Settings(args.upstream.rstrip("/"), args.stop_requests_file, args.verbose, args.upstream_timeout)
    return settings, args.listen_port


def main(argv: list[str] | None = None) -> int:
    settings, port = parse_args(argv)
    return serve(settings, port)


# --- for tests --------------------------------------------------------------------------------------


def start_status_proxy(
    upstream: str,
    *,
    port: int = 0,
    stop_requests_file: str | os.PathLike[str] | None = None,
    stderr: IO[Any] | int | None = None,
    verbose: bool = False,
    seconds: float = 30.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the proxy in its own session in front of the moto server ``upstream``; return it and its URL
    once it listens. ``port`` 0 lets it pick a free port. Stop it with :func:`stop_status_proxy`."""
    command = [sys.executable, "-m", "tests.standins.sagemaker_status", "--listen-port", str(port), "--upstream", upstream]
    if stop_requests_file is not None:
        command += ["--stop-requests-file", os.fspath(stop_requests_file)]
    if verbose:
        command.append("--verbose")
    return start_listening(command, "sagemaker status proxy", stderr, seconds)


def stop_status_proxy(process: subprocess.Popen[bytes], seconds: float = 10.0) -> int | None:
    """Stop the proxy (SIGTERM to its process group, SIGKILL after ``seconds``); return its exit status."""
    return stop_auth_proxy(process, seconds)


@contextlib.contextmanager
def status_proxy(upstream: str, **options: Any) -> Iterator[str]:
    """:func:`start_status_proxy` as a context manager: yield the proxy's URL, stop it on exit."""
    process, url = start_status_proxy(upstream, **options)
    try:
        yield url
    finally:
        stop_status_proxy(process)


def report_end(
    url: str, name: str, status: str, *, exit_code: int | None = None, seconds: float = 0.0, failure: str | None = None
) -> None:
    """Tell the proxy at ``url`` that job ``name`` ended with ``status`` (see the module docstring).
    Raises urllib.error.HTTPError when the proxy refuses it."""
    import urllib.request

    values = {"TrainingJobName": name, "status": status, "exit_code": exit_code, "seconds": seconds, "failure": failure}
    request = urllib.request.Request(
        url.rstrip("/") + END_PATH, data=json.dumps(values).encode(), headers={"Content-Type": JSON_TYPE}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def stop_requests(stop_requests_file: str | os.PathLike[str]) -> list[str]:
    """The job names of the StopTrainingJob requests recorded so far; none if no file yet."""
    path = Path(stop_requests_file)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(main())
