"""What must never be printed or written (credentials), how to find it in a text, and the one place
that masks it in everything this process logs.

A credential is: the user:password (or token) part of a URI, a query parameter named like one
(``?access_token=...``), an AWS access key id, or the value of a variable that holds one
(:data:`SECRET_VALUE_ENV`, e.g. the password ``load_secret_credentials`` read from Secrets Manager).

:func:`install` masks them, for the whole process, in every log record (message and traceback, from
any logger: ours, MLflow's, botocore's, urllib3's), in every warning shown and in the traceback of
an exception nobody caught. What a library writes with ``print`` does not pass through here: that is
handled where it comes from (MLflow's "View run ... at <url>" line is given a URI without userinfo,
see ``model_lib.tracking.credentials.without_userinfo``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

# MLflow's client credentials (MLflow's own names) and AWS's; a value shorter than MIN_SECRET_LENGTH
# is not masked (masking "1" everywhere would hide more than it protects).
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
SECRET_VALUE_ENV = (PASSWORD_ENV, TOKEN_ENV, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
MIN_SECRET_LENGTH = 6
MASK = "***"

_USERINFO = re.compile(r"(?<=://)[^\s/@'\"<>]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&][\w.-]*(?:token|password|passwd|secret|api[_-]?key|signature|credential)[\w.-]*=)[^&\s'\"]+"
)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
# An HTTP authorization or AWS session token header as a library logs it at DEBUG.
_AUTH_HEADER = re.compile(r"(?i)(\b(?:basic|bearer)\s+|x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[A-Za-z0-9+/=._~-]{8,}")
# The words of a name (a tag key) that says it holds a credential: "ci_token", "apiKey", "db-password".
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "token", "credential", "credentials", "apikey", "passphrase"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"), ("auth", "key")}


def _secret_values(environ: Mapping[str, str] | None) -> list[tuple[str, str]]:
    environ = os.environ if environ is None else environ
    found = [(name, environ.get(name) or "") for name in SECRET_VALUE_ENV]
    return sorted(((name, value) for name, value in found if len(value) >= MIN_SECRET_LENGTH), key=lambda f: -len(f[1]))


def named_like_a_secret(name: str) -> bool:
    """Return whether ``name`` says it holds a credential (a word of it is "token", "password", ...)."""
    words = [word.lower() for word in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    return bool(_SECRET_WORDS & set(words)) or any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def find_secret(text: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Return what credential ``text`` holds, in words ("credentials (user:password@) in a URI", "the
    value of AWS_SECRET_ACCESS_KEY", ...), or None when it holds none. ``environ`` (default: this
    process's environment) gives the values of :data:`SECRET_VALUE_ENV`."""
    if _USERINFO.search(text):
        return "credentials (user:password@) in a URI"
    query = _SECRET_QUERY.search(text)
    if query:
        return f"a credential in a URI's query ({query.group(1).lstrip('?&').rstrip('=')}=)"
    if _ACCESS_KEY_ID.search(text):
        return "an AWS access key id"
    if _AUTH_HEADER.search(text):
        return "an authorization header"
    for name, value in _secret_values(environ):
        if value in text:
            return f"the value of {name}"
    return None


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Return ``text`` with every credential :func:`find_secret` knows replaced by ``***``."""
    text = _USERINFO.sub(f"{MASK}@", text)
    text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    text = _ACCESS_KEY_ID.sub(MASK, text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    for _, value in _secret_values(environ):
        text = text.replace(value, MASK)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it as it always does
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean = redact(text)
        if clean != text:
            record.exc_text = clean  # logging.Formatter prints exc_text instead of formatting exc_info again


def _redacting_record_factory(make: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _redact_record(record)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    return factory


def _redacting_formatwarning(format_warning: Any) -> Any:
    def formatwarning(*args: Any, **kwargs: Any) -> str:
        return redact(format_warning(*args, **kwargs))

    formatwarning.redacts = True  # type: ignore[attr-defined]
    return formatwarning


def _redacting_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def install() -> None:
    """Mask credentials, for this whole process, in every log record (its message and its traceback,
    whichever logger and handler), every warning shown, and the traceback of an uncaught exception.
    Calling it again changes nothing.

    Process-wide on purpose: a logger's filter sees only its own records (not its children's), and
    MLflow's logger writes through a handler of its own; the record factory is the one point every
    record passes.
    """
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacts", False):
        logging.setLogRecordFactory(_redacting_record_factory(factory))
    if not getattr(warnings.formatwarning, "redacts", False):
        warnings.formatwarning = _redacting_formatwarning(warnings.formatwarning)
    if sys.excepthook is sys.__excepthook__:  # not one a debugger or a test runner installed
        sys.excepthook = _redacting_excepthook
