"""Credentials for a tracking server: the MLflow credentials held in AWS Secrets Manager, those
given in the tracking URI (moved out of it), and one question to the server, before training,
whether it accepts this process."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from typing import Any

from model_lib.redaction import PASSWORD_ENV, TOKEN_ENV, USERNAME_ENV
from model_lib.tracking.uris import host_and_port, public_uri

SECRET_ENV = "MODEL_LIB_MLFLOW_SECRET"
_CREDENTIAL_ENV = (USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV)
# MLflow prints "View run <name> at: <url>" on stdout when a run ends (MLflow's own variable to stop it).
SUPPRESS_RUN_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def without_userinfo(uri: str, environ: MutableMapping[str, str] | None = None) -> str:
    """Return ``uri`` with no user:password in it, having put them in ``environ`` (default: this
    process's environment) as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, where MLflow's
    client reads them; unless both are set already: MLflow then signs with those, as it did before.

    Why: MLflow quotes the URI it is given in its exception texts and prints it in its "View run"
    line, so the password must never be in any URI MLflow sees. A URI with a user but no password
    (a token as the user name) cannot be given to MLflow any other way: it is kept, and MLflow's
    "View run" line is turned off (:data:`SUPPRESS_RUN_URL_ENV`).
    """
    import urllib.parse

    environ = os.environ if environ is None else environ
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or parts.username is None:
        return uri
    if parts.password is None:
        environ.setdefault(SUPPRESS_RUN_URL_ENV, "true")
        return uri
    if not (environ.get(USERNAME_ENV) and environ.get(PASSWORD_ENV)):
        environ[USERNAME_ENV] = urllib.parse.unquote(parts.username)
        environ[PASSWORD_ENV] = urllib.parse.unquote(parts.password)
    return urllib.parse.urlunsplit(parts._replace(netloc=host_and_port(parts)))


def load_secret_credentials(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Put the MLflow credentials held in the AWS Secrets Manager secret named by
    ``MODEL_LIB_MLFLOW_SECRET`` into ``environ`` (default: this process's environment), where
    MLflow's client reads them; return the secret's name, or None when none is named.

    The secret is a JSON object ``{"username": ..., "password": ...}`` (basic auth) or
    ``{"token": ...}`` (bearer token). Only its name travels in a job's environment; its value is
    read here, with the job role's permission, and never logged.

    Raises:
        ConfigError: if the secret cannot be read or holds neither form (the message names the
            secret and the fields, never a value).
    """
    from model_lib.errors import ConfigError

    environ = os.environ if environ is None else environ
    name = environ.get(SECRET_ENV)
    if not name:
        return None
    # botocore logs every response body at DEBUG (`model-lib -v`): this one is the secret's value, read
    # before it is in MLFLOW_TRACKING_PASSWORD/TOKEN, where the log masking would find it.
    parsers = logging.getLogger("botocore.parsers")
    level = parsers.level
    parsers.setLevel(max(level, logging.INFO))
    try:
        import boto3

        raw = boto3.session.Session().client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    except Exception as exc:  # botocore: no such secret, access denied, no credentials, unreachable
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise ConfigError(f"{SECRET_ENV}={name!r}: the secret could not be read ({code})") from None
    finally:
        parsers.setLevel(level)
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not (isinstance(value, dict) and ((value.get("username") and value.get("password")) or value.get("token"))):
        fields = sorted(value) if isinstance(value, dict) else "not a JSON object"
        raise ConfigError(
            f"{SECRET_ENV}={name!r}: the secret holds {fields}; expected a JSON object with "
            '"username" and "password", or with "token"'
        )
    for stale in _CREDENTIAL_ENV:  # MLflow prefers basic auth: a leftover username would beat the token
        environ.pop(stale, None)
    if isinstance(value, dict) and value.get("username") and value.get("password"):
        environ[USERNAME_ENV] = str(value["username"])
        environ[PASSWORD_ENV] = str(value["password"])
    else:
        environ[TOKEN_ENV] = str(value["token"])
    return name


def check_not_refused(client: Any, uri: str, experiment: str) -> None:
    """Ask the tracking server behind ``client`` once whether it accepts this process, by HTTP
    status: AWS answers a refusal with a body MLflow cannot read as one (it would look like a server
    error, waited out). Returns nothing for a local store (nobody to refuse us) or a server that
    does not answer (an outage, which the queue waits out).

    Raises:
        ConfigError: on HTTP 401 or 403.
    """
    from model_lib.errors import ConfigError

    try:
        # MLflow has no public way to the credentials its store signs with (the sagemaker-mlflow
        # plugin's store signs with SigV4), so this one line reaches into the client.
        creds = client._tracking_client.store.get_host_creds()
    except Exception:  # a local store (sqlite, file)
        return
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            creds,
            "/api/2.0/mlflow/experiments/get-by-name",
            "GET",
            max_retries=0,
            timeout=10,
            params={"experiment_name": experiment},
        )
    except Exception:  # unreachable now
        return
    if response.status_code in (401, 403):
        raise ConfigError(
            f"MLflow at {public_uri(uri)} refused this process: HTTP {response.status_code} "
            f"{response.text.strip()[:300]!r}. Check the credentials (README: MLflow, authentication)"
        )
