"""Return P(positive) over HTTP: the SageMaker hosting contract, served from the training image.

SageMaker hosting (real-time endpoints and batch transform) starts the container as
``docker run IMAGE serve`` with the job's ``model.tar.gz`` unpacked in ``/opt/ml/model`` (what the
training entry point wrote to SM_MODEL_DIR: ``model.keras``, the raw-string model). The container
listens on port 8080 (``SAGEMAKER_BIND_TO_PORT`` where SageMaker sets another) and answers:

- ``GET /ping``: 200 once the model is loaded. The model loads (and is run once) before the server
  takes connections, so any ping that is answered is a 200; a model that cannot load stops the
  server with the reason on stderr (CloudWatch), and the endpoint fails to start.
- ``POST /invocations``: P(positive) per review, from :func:`model_lib.inference.predict` (the code
  ``model-lib predict`` runs, so the figures are the same). Bodies, UTF-8:

  - ``application/json``: ``{"reviews": ["...", ...]}``, ``{"instances": ["...", ...]}`` (the
    TensorFlow Serving key SageMaker clients often send) or a bare list of review strings;
  - ``text/csv``: one review per record, one column, quoted by CSV's rules where it holds commas,
    quotes or line breaks (read with the csv module); no header row;
  - ``text/plain``: one review per line (split on ``\\n`` only, as ``model-lib predict --file``).

  Records are answered in order, so a blank line is refused rather than skipped (a batch
  transform joins outputs to inputs by position). The answer is JSON by default,
  ``{"probabilities": [0.97, 0.02]}``, or one probability per line with ``Accept: text/csv``.
  Each figure is written as Python's shortest repr of the float32 value, so it reads back exactly.
- ``GET /execution-parameters``: what batch transform may send (MaxPayloadInMB, MULTI_RECORD).

Errors are JSON ``{"error": "..."}``: 400 for a body that is not what is expected (the message
says what was), 413 above the body limit (``SAGEMAKER_MAX_PAYLOAD_IN_MB``, set by batch
transform; 6 MB otherwise, batch transform's default), 415 for another content type, 406 for an
Accept we cannot write, 500 without a traceback for anything else (the traceback goes to the log).

Why our own server rather than MLflow's pyfunc scoring server (``mlflow models serve``): that
server wants an environment manager (virtualenv/conda, rebuilt from the logged model's
requirements when the container starts, or a second environment baked into the image) and takes
pandas-split/records bodies (``{"dataframe_split": ...}``), so neither a list of reviews nor
batch transform's one-review-per-line CSV works without a wrapper; and it serves the MLflow copy
of the model, while a job's ``model.tar.gz`` holds ``model.keras``. Here the training image's one
environment serves ``model.keras`` with the loader ``model-lib predict`` uses.

The server is gunicorn (a dependency of mlflow, pinned in constraints.txt) running a Flask app:
gunicorn's master binds the port and handles SIGTERM (SageMaker stops a container with SIGTERM,
then SIGKILL 30 s later) and restarts a dead worker; each worker loads its own copy of the model
after the fork (TensorFlow must not be initialised before a fork). One worker by default
(``SAGEMAKER_MODEL_SERVER_WORKERS`` for more: each holds the model and TensorFlow's memory) with a
few threads: one prediction at a time per worker (TensorFlow already uses every core for one), while
pings and request parsing go on beside it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_lib.errors import ConfigError, DataError, ModelLibError

if TYPE_CHECKING:
    import flask
    import keras
    import numpy as np

logger = logging.getLogger(__name__)

# The hosting contract's names. The model file is the name training writes to SM_MODEL_DIR
# (model_lib.sagemaker.jobs.MODEL_FILE; a test keeps the two equal: the core cannot import the adapter).
MODEL_DIR = Path("/opt/ml/model")
MODEL_FILE = "model.keras"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"

JSON = "application/json"
CSV = "text/csv"
PLAIN = "text/plain"
CONTENT_TYPES = (JSON, CSV, PLAIN)
ACCEPT_TYPES = (JSON, CSV)
JSON_KEYS = ("reviews", "instances")
EXPECTED_JSON = '{"reviews": ["...", ...]}, {"instances": ["...", ...]} or a list of review strings'


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """How the server runs (defaults: the SageMaker hosting contract)."""

    model: Path = MODEL_DIR / MODEL_FILE  # the raw-string model.keras
    host: str = "0.0.0.0"  # every interface: SageMaker reaches the container from outside it
    port: int = 8080
    workers: int = 1  # processes, each with its own copy of the model
    threads: int = 4  # per worker: pings and parsing beside the one running prediction
    max_payload_mb: float = 6.0  # batch transform's default MaxPayloadInMB
    # A worker silent this long is restarted; it covers loading a large model at start, and is
    # above InvokeEndpoint's 60 s answer limit (a request is never cut short before SageMaker's).
    timeout_seconds: int = 300
    # SageMaker sends SIGKILL 30 s after SIGTERM: requests in flight finish before that.
    graceful_seconds: int = 25


class RequestError(ModelLibError):
    """A request the server cannot answer as sent; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---- bodies ----


def parse_reviews(body: bytes, content_type: str, charset: str | None = None) -> list[str]:
    """Return the reviews of an /invocations body of ``content_type`` (a bare media type).

    Raises:
        RequestError: 415 for a content type or charset we do not read, 400 for a body that does
            not hold one or more reviews as that type expects (the message says what it expected).
    """
    if content_type not in CONTENT_TYPES:
        raise RequestError(f"Content-Type: expected one of {', '.join(CONTENT_TYPES)}, got {content_type or 'none'!r}", 415)
    if charset is not None and charset.lower() not in ("utf-8", "utf8", "us-ascii"):
        raise RequestError(f"Content-Type: expected charset utf-8, got {charset!r}", 415)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"body: expected UTF-8 text, got byte {body[exc.start]:#04x} at offset {exc.start}") from None
    if not text.strip():
        raise RequestError(f"body: expected {_expected(content_type)}, got an empty body")
    if content_type == JSON:
        reviews = _json_reviews(text)
    elif content_type == CSV:
        reviews = _csv_reviews(text)
    else:
        reviews = _plain_reviews(text)
    return reviews


def _expected(content_type: str) -> str:
    if content_type == JSON:
        return EXPECTED_JSON
    return "one review per CSV record (one column)" if content_type == CSV else "one review per line"


def _json_reviews(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        got = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise RequestError(f"body: expected JSON, got {got}") from None
    where = "body"
    if isinstance(value, dict):
        keys = [key for key in JSON_KEYS if key in value]
        extra = sorted(set(value) - set(JSON_KEYS))
        if len(keys) != 1 or extra:
            got = f"keys {sorted(value)}" if value else "an empty object"
            raise RequestError(f"body: expected one of the keys {', '.join(map(repr, JSON_KEYS))}, got {got}")
        where, value = keys[0], value[keys[0]]
    if not isinstance(value, list):
        expected = EXPECTED_JSON if where == "body" else "a list of review strings"
        raise RequestError(f"{where}: expected {expected}, got {_kind(value)}")
    if not value:
        raise RequestError(f"{where}: expected at least one review, got an empty list")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestError(f"{where}[{index}]: expected a review string, got {_kind(item)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a number ({value!r})" if isinstance(value, int | float) else type(value).__name__)


def _csv_reviews(text: str) -> list[str]:
    reviews: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if len(row) != 1 or not row[0].strip():
                got = "an empty record" if not row or not "".join(row).strip() else f"{len(row)} columns"
                raise RequestError(
                    f"body: record {len(reviews) + 1} (line {reader.line_num}): expected one column holding a review"
                    f" (quote a review that holds commas), got {got}"
                )
            reviews.append(row[0])
    except csv.Error as exc:
        raise RequestError(f"body: line {reader.line_num}: expected CSV, got {exc}") from None
    return reviews


def _plain_reviews(text: str) -> list[str]:
    # "\n" only, never splitlines(): IMDB reviews hold U+0085 and other characters it splits on.
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise RequestError(f"body: line {number}: expected a review, got an empty line")
    return lines


def format_probabilities(probabilities: Sequence[float] | np.ndarray, accept: str) -> tuple[bytes, str]:
    """Return (body, media type) of the answer: JSON ``{"probabilities": [...]}`` or CSV, one per line.

    Each figure is the shortest repr of its float32 value, which reads back as the same float32.
    """
    figures = [float(p) for p in probabilities]
    if accept == CSV:
        return "".join(f"{p!r}\n" for p in figures).encode(), CSV
    return json.dumps({"probabilities": figures}).encode(), JSON


# ---- the app ----


class Predictor:
    """The loaded model, scored one request at a time (Keras' predict is not meant for concurrent calls)."""

    def __init__(self, model_path: Path) -> None:
        from model_lib.inference import load_raw_string_model, predict

        self._predict: Callable[[keras.Model, Sequence[str]], np.ndarray] = predict
        self._model = load_raw_string_model(model_path)
        self._lock = threading.Lock()
        self.predict(["a first review, so that the first request does not wait for tracing"])

    def predict(self, reviews: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._predict(self._model, reviews)


def create_app(config: ServingConfig, predictor: Predictor | None = None) -> flask.Flask:
    """Return the Flask app answering the hosting contract (the model loaded now, unless given)."""
    import flask
    from werkzeug.exceptions import HTTPException

    predictor = predictor if predictor is not None else Predictor(config.model)
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(config.max_payload_mb * 1_000_000)

    def error(message: str, status: int) -> flask.Response:
        return flask.Response(json.dumps({"error": message}) + "\n", status=status, mimetype=JSON)

    @app.get("/ping")
    def ping() -> flask.Response:
        return flask.Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> flask.Response:
        limit = max(1, math.floor(config.max_payload_mb))
        parameters = {"MaxConcurrentTransforms": config.workers, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": limit}
        return flask.Response(json.dumps(parameters), mimetype=JSON)

    @app.post("/invocations")
    def invocations() -> flask.Response:
        request = flask.request
        accept = request.accept_mimetypes.best_match(ACCEPT_TYPES) if request.accept_mimetypes else JSON
        if accept is None:
            return error(f"Accept: expected one of {', '.join(ACCEPT_TYPES)}, got {request.headers.get('Accept')!r}", 406)
        try:
            reviews = parse_reviews(request.get_data(), request.mimetype, request.mimetype_params.get("charset"))
            probabilities = predictor.predict(reviews)
        except RequestError as exc:
            return error(str(exc), exc.status)
        except DataError as exc:  # predict's own checks (a review with no words)
            return error(str(exc), 400)
        body, media_type = format_probabilities(probabilities, accept)
        return flask.Response(body, mimetype=media_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        if exc.code == 413:
            return error(f"body: expected at most {config.max_payload_mb:g} MB ({PAYLOAD_ENV}), got more", 413)
        if exc.code == 404:
            return error(f"{flask.request.path}: not found; expected GET /ping or POST /invocations", 404)
        return error(f"{exc.name}: {exc.description}", exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> flask.Response:
        logger.exception("unexpected error answering %s %s", flask.request.method, flask.request.path)
        return error("internal error: see the server's log", 500)

    return app


# ---- the server ----


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> ServingConfig:
    """Return the server's config from the command line, then SageMaker's variables, then the defaults.

    Raises:
        ConfigError: for a variable or flag out of range (it names which).
    """
    default = ServingConfig()
    port = args.port if args.port is not None else _number(environ, PORT_ENV, default.port, int)
    workers = args.workers if args.workers is not None else _number(environ, WORKERS_ENV, default.workers, int)
    payload = _number(environ, PAYLOAD_ENV, default.max_payload_mb, float)
    where = "--port" if args.port is not None else PORT_ENV
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: expected a port number from 1 to 65535, got {port}")
    if workers < 1:
        raise ConfigError(f"{'--workers' if args.workers is not None else WORKERS_ENV}: expected at least 1, got {workers}")
    if not (math.isfinite(payload) and payload > 0):
        raise ConfigError(f"{PAYLOAD_ENV}: expected a number of MB > 0, got {payload:g}")
    return dataclasses.replace(default, model=args.model, host=args.host, port=port, workers=workers, max_payload_mb=payload)


def _number(environ: Mapping[str, str], name: str, default: Any, kind: Callable[[str], Any]) -> Any:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def gunicorn_options(config: ServingConfig) -> dict[str, Any]:
    """Return gunicorn's settings for ``config``."""
    return {
        "bind": f"{config.host}:{config.port}",
        "workers": config.workers,
        "worker_class": "gthread",
        "threads": config.threads,
        "timeout": config.timeout_seconds,
        "graceful_timeout": config.graceful_seconds,
        "preload_app": False,  # each worker loads the model after the fork
        "accesslog": None,  # a line per request would cost more CloudWatch than it tells
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "model-lib-serve",
        # No runtime control socket (gunicornc): one path per user, which two servers on a machine would share.
        "control_socket_disable": True,
    }


def run_server(config: ServingConfig) -> None:
    """Serve ``config.model`` with gunicorn until SIGTERM or SIGINT."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    class Server(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
        def load_config(self) -> None:
            for key, value in gunicorn_options(config).items():
                self.cfg.set(key, value)

        def load(self) -> flask.Flask:
            try:
                return create_app(config)
            except ModelLibError as exc:  # a model that cannot serve: one line, and gunicorn stops
                logger.error("cannot serve %s: %s", config.model, exc)
                sys.exit(Arbiter.WORKER_BOOT_ERROR)

    Server().run()


def build_parser() -> argparse.ArgumentParser:
    default = ServingConfig()
    parser = argparse.ArgumentParser(
        prog="model-lib-serve",
        description="Serve a raw-string model.keras on SageMaker's hosting contract (/ping, /invocations).",
    )
    parser.add_argument("--model", type=Path, default=default.model, help=f"the model (default {default.model})")
    where = f"address to listen on (default {default.host}; 127.0.0.1 for this machine only)"
    parser.add_argument("--host", default=default.host, help=where)
    parser.add_argument("--port", type=int, help=f"port (default ${PORT_ENV}, else {default.port})")
    workers = f"processes, each holding the model (default ${WORKERS_ENV}, else {default.workers})"
    parser.add_argument("--workers", type=int, help=workers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``serve`` command of the image (and ``python -m model_lib.serving``)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from(args, os.environ)
        if not config.model.is_file():
            raise DataError(f"{config.model}: model file not found (SageMaker unpacks model.tar.gz into {MODEL_DIR})")
    except ModelLibError as exc:
        print(f"model-lib-serve: error: {exc}", file=sys.stderr)
        return 2
    run_server(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
