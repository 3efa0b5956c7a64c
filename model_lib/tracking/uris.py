"""Checks of the names a user gives before anything trains (the tracking URI, a registered model
name), and the form of a URI that may be shown (no user:password)."""

from __future__ import annotations

import importlib.util
import os
import re
import urllib.parse
from pathlib import Path

# Registers the logged model under this name (a local train stage and a SageMaker job alike).
REGISTER_MODEL_ENV = "MODEL_LIB_REGISTER_MODEL"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# MLflow's own switch: MLflow 3 refuses a file store (a path, file:) unless it is "true".
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
KNOWN_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "arn")


def host_and_port(parts: urllib.parse.SplitResult) -> str:
    """Return the netloc of ``parts`` without its user:password (an IPv6 host in brackets)."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def public_uri(uri: str) -> str:
    """Return ``uri`` without user:password (for logs and messages)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host_and_port(parts)}"))


def check_tracking_uri(uri: str) -> None:
    """Check a tracking URI can work at all (a wrong configuration fails before training).

    Raises:
        ConfigError: for a URI whose scheme MLflow cannot track to, or a file store MLflow refuses.
    """
    import os

    from model_lib.errors import ConfigError

    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    if scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={public_uri(uri)!r}: unknown scheme {scheme!r}; expected one of {', '.join(KNOWN_SCHEMES)}"
        )
    if scheme == "file" and os.environ.get(ALLOW_FILE_STORE_ENV, "").strip().lower() != "true":
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={public_uri(uri)!r}: a file store, which MLflow 3 refuses unless "
            f"{ALLOW_FILE_STORE_ENV}=true; expected a server (http://, https://) or a database (sqlite:///mlflow.db)"
        )
    if scheme == "arn":
        if not re.fullmatch(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/.+", uri):
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={uri!r}: not a SageMaker MLflow ARN; expected "
                "arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>"
            )
        if importlib.util.find_spec("sagemaker_mlflow") is None:
            raise ConfigError(f"MLFLOW_TRACKING_URI={uri!r} needs the sagemaker-mlflow plugin: pip install sagemaker-mlflow")


def local_store(uri: str) -> tuple[Path, bool] | None:
    """Return where a local tracking store lives, and whether that is a file (a sqlite database) or
    a folder (a file store); None for a server or a database elsewhere."""
    if uri.startswith("sqlite:///"):
        database = uri[len("sqlite:///") :].split("?", 1)[0]
        return (Path(database), True) if database not in ("", ":memory:") else None
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)), False
    return (Path(uri), False) if uri and ":" not in uri else None


def check_tracking_store(uri: str) -> None:
    """Check a local tracking store (sqlite database, file store) can be written, before a run opens.

    Raises:
        OutputError: ``MLFLOW_TRACKING_URI=<uri>: <path>: expected ...``, naming the path that refuses.
    """
    from model_lib._io import check_output_file, check_output_folder
    from model_lib.errors import OutputError

    store = local_store(uri)
    if store is None:
        return
    path, is_file = store
    try:
        if not is_file:
            check_output_folder(path, "the tracking store")
            return
        check_output_file(path, "the tracking store")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"{path}: expected a database this process can write, got mode {path.stat().st_mode & 0o777:o}")
    except OutputError as exc:
        raise OutputError(f"MLFLOW_TRACKING_URI={public_uri(uri)}: {exc}") from None


def check_model_name(name: str) -> None:
    """Check a registered model name before anything trains.

    Raises:
        ConfigError: unless it is 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit.
    """
    from model_lib.errors import ConfigError

    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"--register-model {name!r}: expected 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
