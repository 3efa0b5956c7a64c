"""An authenticating reverse proxy in front of a real `mlflow server`, for integration tests.

It stands in for (a) SageMaker managed MLflow, whose requests the `sagemaker-mlflow` plugin signs
with AWS SigV4 (service ``sagemaker-mlflow``) and routes with the ``x-mlflow-sm-tracking-server-arn``
header, and (b) a self-hosted MLflow behind basic auth or a bearer token. Requests that do not
authenticate get 401 (no credentials) or 403 (wrong credentials, bad signature) with a body in
MLflow's error format, so the MLflow client raises ``RestException`` with that HTTP status; every
other request is forwarded (method, path, query, headers less hop-by-hop and credentials, body) and
the answer relayed. ``/health`` passes without credentials so that tests can wait for readiness.

Run it as ``python -m tests.standins.auth_proxy --listen-port 0 --upstream http://127.0.0.1:5000
--mode bearer --token T`` from the repository root, or from a test with :func:`start_auth_proxy` /
:func:`stop_auth_proxy` (or :func:`auth_proxy`). Standard library only, plus botocore for SigV4.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
# Never forwarded upstream: the proxy has checked them, the upstream server has no auth of its own.
CREDENTIAL_HEADERS = {"authorization", ARN_HEADER, "x-sm-mlflow-app-arn"}
CHUNK = 256 * 1024
MAX_DRAIN = 256 * 1024 * 1024  # a rejected request's body up to this size is read and dropped, keeping the connection
MAX_SKEW_SECONDS = 15 * 60  # as AWS: a signature older or newer than this is refused
AUTH_PARTS = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Rejected(Exception):
    """A request that does not authenticate: ``status`` 401 (no credentials) or 403 (wrong ones)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def missing(reason: str) -> Rejected:
    return Rejected(401, reason)


def denied(reason: str) -> Rejected:
    return Rejected(403, reason)


@dataclass(frozen=True)
class Settings:
    mode: str
    upstream: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None
    service: str = "sagemaker-mlflow"
    arn: str | None = None
    reject_count_file: str | None = None
    fail_artifact_uploads: int = 0
    verbose: bool = False
    upstream_timeout: float = 300.0


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_basic(authorization: str | None, settings: Settings) -> None:
    if not authorization:
        raise missing("no Authorization header")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise missing(f"Authorization scheme {scheme!r} is not Basic")
    try:
        username, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise denied("Basic credentials are not base64 of user:password") from None
    user_ok = _same(username, settings.username or "")
    password_ok = _same(password, settings.password or "")
    if not (user_ok and password_ok):
        raise denied("wrong username or password")


def check_bearer(authorization: str | None, settings: Settings) -> None:
    if not authorization:
        raise missing("no Authorization header")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise missing(f"Authorization scheme {scheme!r} is not Bearer")
    if not _same(value.strip(), settings.token or ""):
        raise denied("wrong bearer token")


def _verifier(settings: Settings) -> Any:
    """A botocore SigV4Auth holding the proxy's credentials, whose request preparation does nothing,
    so that a request is signed with exactly the headers the client signed."""
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    class VerifyingSigV4Auth(SigV4Auth):
        def _modify_request_before_signing(self, request: Any) -> None:
            pass

        def expected_signature(self, request: Any) -> str:
            canonical_request = self.canonical_request(request)
            return self.signature(self.string_to_sign(request, canonical_request), request)

    credentials = Credentials(settings.access_key_id, settings.secret_access_key)
    return VerifyingSigV4Auth(credentials, settings.service, settings.region)


def check_sigv4(method: str, target: str, headers: Any, body: bytes, settings: Settings) -> None:
    """Verify a request as the sagemaker-mlflow plugin signs it (``headers`` is the request's
    ``http.client.HTTPMessage``, ``target`` the path and query of the request line)."""
    from botocore.awsrequest import AWSRequest, HTTPHeaders

    authorization = headers.get("Authorization")
    if not authorization:
        raise missing("no Authorization header")
    scheme, _, rest = authorization.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        raise missing(f"Authorization scheme {scheme!r} is not AWS4-HMAC-SHA256")
    parts = dict(AUTH_PARTS.findall(rest))
    if set(parts) != {"Credential", "SignedHeaders", "Signature"}:
        raise denied("Authorization lacks Credential, SignedHeaders or Signature")
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise denied("Credential is not ID/DATE/REGION/SERVICE/aws4_request")
    key_id, day, region, service, _ = scope
    if not _same(key_id, settings.access_key_id or ""):
        raise denied("unknown access key id")
    if region != settings.region or service != settings.service:
        raise denied(f"credential scope {region}/{service} is not {settings.region}/{settings.service}")
    stamp = headers.get("X-Amz-Date") or ""
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise denied("no valid X-Amz-Date header") from None
    if stamp[:8] != day:
        raise denied("X-Amz-Date is not on the credential scope's date")
    if abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise denied("X-Amz-Date is more than 15 minutes from now")
    signed = parts["SignedHeaders"].split(";")
    if not {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed):
        raise denied("host, x-amz-date and x-amz-content-sha256 must all be signed")
    content_sha = headers.get("X-Amz-Content-SHA256") or ""
    if not _same(content_sha, hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256):
        raise denied("X-Amz-Content-SHA256 does not match the body")

    request = AWSRequest(method=method, url=f"http://{headers.get('Host', '')}{target}", data=body)
    request.headers = HTTPHeaders()
    for name in signed:
        values = headers.get_all(name)
        if values is None:
            raise denied(f"signed header {name!r} is not in the request")
        for value in values:
            request.headers[name] = value
    request.context["timestamp"] = stamp
    expected = _verifier(settings).expected_signature(request)
    if not hmac.compare_digest(parts["Signature"].encode("ascii", "replace"), expected.encode("ascii")):
        raise denied("signature does not match")
    arn = headers.get(ARN_HEADER)
    if arn is None:
        raise denied(f"no {ARN_HEADER} header")
    if arn != settings.arn:
        raise denied(f"{ARN_HEADER} names another tracking server")


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "auth-proxy"
    timeout = 600  # an idle keep-alive connection is closed after this
    settings: Settings  # set on the subclass made in serve()
    reject_lock = threading.Lock()
    failed_uploads = 0

    def do_GET(self) -> None:
        self.handle_proxied()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # --- request body -------------------------------------------------------------------------
    def _is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _content_length(self) -> int:
        value = self.headers.get("Content-Length")
        try:
            return max(int(value), 0) if value is not None else 0
        except ValueError:
            return 0

    def _chunks(self) -> Iterator[bytes]:
        """The request body, in pieces, from Content-Length or chunked transfer encoding."""
        if self._is_chunked():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, CHUNK))
                    if not piece:
                        raise ConnectionError("client closed mid-chunk")
                    remaining -= len(piece)
                    yield piece
                self.rfile.readline(65537)  # CRLF after each chunk
        else:
            remaining = self._content_length()
            while remaining:
                piece = self.rfile.read(min(remaining, CHUNK))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                remaining -= len(piece)
                yield piece

    def _drain(self) -> None:
        if not self._is_chunked() and self._content_length() > MAX_DRAIN:
            self.close_connection = True
            return
        for _ in self._chunks():
            pass

    # --- handling -----------------------------------------------------------------------------
    def handle_proxied(self) -> None:
        settings = self.settings
        path = urlsplit(self.path).path
        body: bytes | Iterator[bytes]
        try:
            if path == "/health":
                body = b"".join(self._chunks())
            elif settings.mode == "sigv4":
                body = b"".join(self._chunks())
                check_sigv4(self.command, self.path, self.headers, body, settings)
            else:
                authorization = self.headers.get("Authorization")
                try:
                    (check_basic if settings.mode == "basic" else check_bearer)(authorization, settings)
                except Rejected:
                    self._drain()
                    raise
                body = b"".join(self._chunks()) if self._is_chunked() else self._chunks()
        except Rejected as rejected:
            self.reject(rejected)
            return
        if self.command == "PUT" and "/mlflow-artifacts/artifacts/" in path and self._fail_this_upload():
            if not isinstance(body, bytes):
                for _ in body:
                    pass
            self.send_error_json(
                503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "auth-proxy: upload refused on purpose"}
            )
            return
        self.forward(body)

    def _fail_this_upload(self) -> bool:
        with self.reject_lock:
            if type(self).failed_uploads >= self.settings.fail_artifact_uploads:
                return False
            type(self).failed_uploads += 1
        sys.stderr.write(f"auth-proxy: failed artifact upload {self.path} on purpose\n")
        return True

    def send_error_json(self, status: int, body: dict[str, str], headers: tuple[tuple[str, str], ...] = ()) -> None:
        payload = json.dumps(body).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def reject(self, rejected: Rejected) -> None:
        path = urlsplit(self.path).path
        line = f"{rejected.status} {self.command} {path}: {rejected.reason}"
        sys.stderr.write(f"auth-proxy: rejected {line}\n")
        sys.stderr.flush()
        if self.settings.reject_count_file:
            with self.reject_lock, open(self.settings.reject_count_file, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        code = "UNAUTHENTICATED" if rejected.status == 401 else "PERMISSION_DENIED"
        if self.settings.mode == "sigv4":
            # As AWS answers: {"message": ...} and the error type in a header. MLflow's client finds no
            # error_code in it and reports a server error (500): only the HTTP status tells a refusal.
            payload = json.dumps({"message": f"auth-proxy: {rejected.reason}"}).encode()
        else:
            payload = json.dumps({"error_code": code, "message": f"auth-proxy: {rejected.reason}"}).encode()
        self.send_response_only(rejected.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.settings.mode == "sigv4":
            self.send_header(
                "x-amzn-ErrorType", "AccessDeniedException" if rejected.status == 403 else "UnrecognizedClientException"
            )
        if rejected.status == 401:
            scheme = {"basic": 'Basic realm="mlflow"', "bearer": "Bearer"}.get(self.settings.mode, "AWS4-HMAC-SHA256")
            self.send_header("WWW-Authenticate", scheme)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _upstream_headers(self, length: int | None) -> list[tuple[str, str]]:
        listed = {n.strip().lower() for n in (self.headers.get("Connection") or "").split(",")}
        drop = HOP_BY_HOP | CREDENTIAL_HEADERS | listed | {"host", "content-length"}
        kept = [(k, v) for k, v in self.headers.items() if k.lower() not in drop and not k.lower().startswith("x-amz-")]
        kept.append(("Host", urlsplit(self.settings.upstream).netloc))
        if length is not None:
            kept.append(("Content-Length", str(length)))
        return kept

    def forward(self, body: bytes | Iterator[bytes]) -> None:
        upstream = urlsplit(self.settings.upstream)
        target = upstream.path.rstrip("/") + self.path
        length = len(body) if isinstance(body, bytes) else self._content_length()
        has_body = length > 0 or self.command in ("POST", "PUT", "PATCH")
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=self.settings.upstream_timeout)
        try:
            try:
                connection.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
                for name, value in self._upstream_headers(length if has_body else None):
                    connection.putheader(name, value)
                connection.endheaders()
                if isinstance(body, bytes):
                    if body:
                        connection.send(body)
                else:
                    for piece in body:
                        connection.send(piece)
                response = connection.getresponse()
            except OSError as error:
                self.close_connection = True  # the client's body may be left unread
                self.upstream_failed(error)
                return
            self.relay(response)
        finally:
            connection.close()

    def upstream_failed(self, error: OSError) -> None:
        sys.stderr.write(f"auth-proxy: upstream failed for {self.command} {urlsplit(self.path).path}: {error!r}\n")
        payload = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"auth-proxy: upstream: {error}"}).encode()
        self.send_response_only(502)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def relay(self, response: http.client.HTTPResponse) -> None:
        listed = {n.strip().lower() for n in (response.getheader("Connection") or "").split(",")}
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP | listed:
                self.send_header(name, value)
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        declared = response.getheader("Content-Length")
        if self.settings.verbose:
            sys.stderr.write(f"auth-proxy: {self.command} {urlsplit(self.path).path} -> {response.status}\n")
        if no_body:
            self.end_headers()
            return
        if declared is not None:
            self.end_headers()
            while piece := response.read(CHUNK):
                self.wfile.write(piece)
            return
        if self.request_version == "HTTP/1.0":  # no chunked answers for HTTP/1.0 clients
            data = response.read()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while piece := response.read1(CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        if self.settings.verbose:
            super().log_message(format, *args)


def serve(settings: Settings, port: int) -> int:
    """Serve on 127.0.0.1:``port`` (0: any free port) until SIGTERM or SIGINT; return the exit status."""
    return serve_until_stopped(type("Handler", (ProxyHandler,), {"settings": settings}), port)


def serve_until_stopped(handler: type[BaseHTTPRequestHandler], port: int) -> int:
    """Serve ``handler`` on 127.0.0.1:``port``, say "listening on <URL>" on stdout, stop on SIGTERM or
    SIGINT; return the exit status (0). Every stand-in's server loop."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def parse_args(argv: list[str] | None = None) -> tuple[Settings, int]:
    parser = argparse.ArgumentParser(prog="python -m tests.standins.auth_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--upstream", required=True, help="the real MLflow server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--mode", choices=("sigv4", "basic", "bearer"), required=True)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--token")
    parser.add_argument("--access-key-id")
    parser.add_argument("--secret-access-key")
    parser.add_argument("--region")
    parser.add_argument("--service", default="sagemaker-mlflow")
    parser.add_argument("--arn", help="the value x-mlflow-sm-tracking-server-arn must have")
    parser.add_argument("--reject-count-file", help="append one line per rejected request")
    parser.add_argument("--upstream-timeout", type=float, default=300.0)
    parser.add_argument(
        "--fail-artifact-uploads", type=int, default=0, metavar="N", help="answer the first N artifact uploads 503"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    needed = {
        "basic": ("username", "password"),
        "bearer": ("token",),
        "sigv4": ("access_key_id", "secret_access_key", "region", "arn"),
    }[args.mode]
    absent = [f"--{name.replace('_', '-')}" for name in needed if getattr(args, name) is None]
    if absent:
        parser.error(f"--mode {args.mode} needs {' '.join(absent)}")
    upstream = urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        parser.error("--upstream must be an http:// URL")
    settings = Settings(
        mode=args.mode,
        upstream=args.upstream,
        username=args.username,
        password=args.password,
        token=args.token,
        access_key_id=args.access_key_id,
        secret_access_key=args.secret_access_key,
        region=args.region,
        service=args.service,
        arn=args.arn,
        reject_count_file=args.reject_count_file,
        fail_artifact_uploads=args.fail_artifact_uploads,
        verbose=args.verbose,
        upstream_timeout=args.upstream_timeout,
    )
    return settings, args.listen_port


def main(argv: list[str] | None = None) -> int:
    settings, port = parse_args(argv)
    return serve(settings, port)


# --- for tests --------------------------------------------------------------------------------------


def start_auth_proxy(
    upstream: str,
    mode: str,
    *,
    port: int = 0,
    reject_count_file: str | os.PathLike[str] | None = None,
    stderr: IO[Any] | int | None = None,
    seconds: float = 30.0,
    **options: object,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the proxy in its own session in front of ``upstream``; return it and its URL once it listens.

    ``options`` are the mode's flags by their Python names (``token="t"``, ``username=..., password=...``,
    ``access_key_id=..., secret_access_key=..., region=..., arn=...``; ``verbose=True``). ``port`` 0 lets
    the proxy pick a free port. Stop it with :func:`stop_auth_proxy`."""
    command = [sys.executable, "-m", "tests.standins.auth_proxy", "--listen-port", str(port), "--upstream", upstream]
    command += ["--mode", mode]
    if reject_count_file is not None:
        command += ["--reject-count-file", os.fspath(reject_count_file)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not None and value is not False:
            command += [flag, str(value)]
    return start_listening(command, "auth proxy", stderr, seconds)


def start_listening(
    command: list[str], what: str, stderr: IO[Any] | int | None = None, seconds: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a stand-in (``command``) in its own session; return it and its URL once its first line
    says "listening on http://127.0.0.1:PORT"."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    assert process.stdout is not None
    deadline = time.monotonic() + seconds
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                stop_auth_proxy(process)
                raise RuntimeError(f"{what} did not say it listens within {seconds} s")
            piece = os.read(process.stdout.fileno(), 4096)
            if not piece:
                process.wait(timeout=5)
                raise RuntimeError(f"{what} exited with {process.returncode} before listening")
            line += piece
    match = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", line)
    if match is None:
        stop_auth_proxy(process)
        raise RuntimeError(f"unexpected first line from {what}: {line!r}")
    return process, match.group(1).decode()


def stop_auth_proxy(process: subprocess.Popen[bytes], seconds: float = 10.0) -> int | None:
    """Stop the proxy (SIGTERM to its process group, SIGKILL after ``seconds``); return its exit status."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=seconds)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=seconds)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@contextlib.contextmanager
def auth_proxy(upstream: str, mode: str, **options: Any) -> Iterator[str]:
    """:func:`start_auth_proxy` as a context manager: yield the proxy's URL, stop it on exit."""
    process, url = start_auth_proxy(upstream, mode, **options)
    try:
        yield url
    finally:
        stop_auth_proxy(process)


def rejections(reject_count_file: str | os.PathLike[str]) -> list[str]:
    """The lines written for rejected requests (``STATUS METHOD PATH: reason``); none if no file yet."""
    path = Path(reject_count_file)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(main())
