"""What MLflow's own basic-auth app cannot play, in front of a real `mlflow server`, for tests:

- SageMaker managed MLflow: the `sagemaker-mlflow` plugin signs every request with AWS SigV4 (service
  ``sagemaker-mlflow``) and names the tracking server in the ``x-mlflow-sm-tracking-server-arn`` header;
  AWS refuses with ``{"message": ...}`` and no MLflow error code, which MLflow's client reads as a
  server error (HTTP 500), not as a refusal;
- a server behind a bearer token, or behind basic auth checked cheaply (MLflow's basic-auth app hashes
  the password on every request: seconds per run);
- a server that refuses the first artifact uploads (HTTP 503);
- a server gone away mid-run (every request HTTP 503 from a given request on).

:func:`auth_proxy` serves a :class:`Policy` on a free 127.0.0.1 port in a thread of the test; what passes
goes on to the server through werkzeug's ProxyMiddleware.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import NotFound
from werkzeug.middleware.http_proxy import ProxyMiddleware
from werkzeug.serving import make_server
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_input_stream

ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
JSON = "application/json"
AUTH_PARTS = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclass(frozen=True)
class SigV4:
    """The credentials a request must be signed with, and the tracking server it must name."""

    access_key_id: str
    secret_access_key: str
    region: str
    arn: str
    service: str = "sagemaker-mlflow"


@dataclass
class Policy:
    """What the proxy refuses: with ``token``, a request without ``Authorization: Bearer <token>``; with
    ``basic`` (user, password), one without that user's basic authorization; with
    ``sigv4``, one not signed as :class:`SigV4` says; the first ``fail_uploads`` artifact uploads; and
    every request (HTTP 503) while ``down`` is set, which the first request to a path ending with
    ``down_at`` sets. ``refused`` and ``failed_uploads`` list those requests as "STATUS METHOD PATH"."""

    token: str | None = None
    basic: tuple[str, str] | None = None
    sigv4: SigV4 | None = None
    fail_uploads: int = 0
    down: bool = False
    down_at: str | None = None
    refused: list[str] = field(default_factory=list)
    failed_uploads: list[str] = field(default_factory=list)


def sigv4_refusal(environ: dict[str, Any], body: bytes, sigv4: SigV4) -> int | None:
    """Return 401 for an unsigned request, 403 for one AWS would refuse (another key, secret, region,
    service or tracking server; a body the signed checksum does not match), None for a good one."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = EnvironHeaders(environ)
    scheme, _, rest = headers.get("Authorization", "").partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return 401
    parts = dict(AUTH_PARTS.findall(rest))
    if len(parts) != 3:
        return 403
    signed = {name: headers.get(name, "") for name in parts["SignedHeaders"].split(";")}
    url = f"http://{headers.get('Host')}{environ['RAW_URI']}"
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, data=body, headers=signed)
    request.context["timestamp"] = headers.get("X-Amz-Date", "")
    signer = SigV4Auth(Credentials(sigv4.access_key_id, sigv4.secret_access_key), sigv4.service, sigv4.region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    good = (
        parts["Credential"].startswith(f"{sigv4.access_key_id}/")
        and parts["Signature"] == expected
        # botocore signs the checksum header as it stands: AWS also checks it against the body
        and headers.get("X-Amz-Content-SHA256") == hashlib.sha256(body).hexdigest()
        and headers.get(ARN_HEADER) == sigv4.arn
    )
    return None if good else 403


class AuthProxy:
    """A WSGI app that answers by its :class:`Policy` and forwards the rest of /api (every MLflow REST
    and artifact route) to ``upstream``."""

    def __init__(self, upstream: str, policy: Policy) -> None:
        self.policy = policy
        self.forward = ProxyMiddleware(NotFound(), {"/api": {"target": upstream}}, timeout=300)
        self.lock = threading.Lock()

    def refusal(self, environ: dict[str, Any], body: bytes) -> int | None:
        """Return the status to refuse this request with (401, 403), or None to let it pass."""
        if self.policy.sigv4 is not None:
            return sigv4_refusal(environ, body, self.policy.sigv4)
        if self.policy.token is not None:
            expected = f"Bearer {self.policy.token}"
        elif self.policy.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self.policy.basic).encode()).decode()
        else:
            return None
        given = environ.get("HTTP_AUTHORIZATION")
        return None if given == expected else 403 if given else 401

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = get_input_stream(environ).read()  # read whole, also when refused: the connection stays usable
        environ["wsgi.input"] = io.BytesIO(body)
        request = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        if self.policy.down_at is not None and environ["PATH_INFO"].endswith(self.policy.down_at):
            self.policy.down = True
        if self.policy.down:
            answer = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "auth-proxy: down on purpose"}
            return Response(json.dumps(answer), 503, content_type=JSON)(environ, start_response)
        status = self.refusal(environ, body)
        if status is not None:
            self.policy.refused.append(f"{status} {request}")
            return self.refuse(status)(environ, start_response)
        if environ["REQUEST_METHOD"] == "PUT" and "/mlflow-artifacts/artifacts/" in environ["PATH_INFO"]:
            with self.lock:
                fail = len(self.policy.failed_uploads) < self.policy.fail_uploads
                if fail:
                    self.policy.failed_uploads.append(f"503 {request}")
            if fail:
                answer = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "auth-proxy: upload refused on purpose"}
                return Response(json.dumps(answer), 503, content_type=JSON)(environ, start_response)
        return self.forward(environ, start_response)

    def refuse(self, status: int) -> Response:
        """Return the refusal: in AWS's form with ``sigv4`` (no MLflow error code), else in MLflow's."""
        if self.policy.sigv4 is not None:  # as AWS answers
            error = "AccessDeniedException" if status == 403 else "UnrecognizedClientException"
            answer = {"message": f"auth-proxy: {error}"}
            return Response(json.dumps(answer), status, {"x-amzn-ErrorType": error}, content_type=JSON)
        code = "PERMISSION_DENIED" if status == 403 else "UNAUTHENTICATED"
        return Response(json.dumps({"error_code": code, "message": "auth-proxy: refused"}), status, content_type=JSON)


@contextlib.contextmanager
def auth_proxy(upstream: str, policy: Policy) -> Iterator[str]:
    """Serve ``policy`` in front of the MLflow server at ``upstream`` on a free 127.0.0.1 port, in a
    thread; yield the proxy's URL; stop it on exit."""
    server = make_server("127.0.0.1", 0, AuthProxy(upstream, policy), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
