"""No credential in what a process prints: the masking itself, the process-wide install (every logger,
warnings, uncaught tracebacks), and the tracking URI MLflow is given (no user:password in it)."""

import subprocess
import sys

import pytest

from model_lib.redaction import find_secret, redact
from model_lib.tracking.credentials import without_userinfo


@pytest.mark.parametrize(
    "text,shown",
    [
        ("API request to http://alice:pw-1234@127.0.0.1:5000/api failed", "API request to http://***@127.0.0.1:5000/api failed"),
        ("View run at: https://t0ken@mlflow.example.com/#/x", "View run at: https://***@mlflow.example.com/#/x"),
        ("GET https://h/p?a=1&access_token=abc.def&b=2", "GET https://h/p?a=1&access_token=***&b=2"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F&X-Amz-Signature=9f",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        ("key AKIAABCDEFGHIJKLMNOP in use", "key *** in use"),
        (
            "{'Authorization': 'Basic YWxpY2U6cHc=', 'X-Amz-Security-Token': 'IQoJb3JpZ2lu'}",
            "{'Authorization': 'Basic ***', 'X-Amz-Security-Token': '***'}",
        ),
        ("headers={'authorization': 'Bearer abc.def.ghi'}", "headers={'authorization': 'Bearer ***'}"),
        ("the password is hunter22 (from the secret)", "the password is *** (from the secret)"),
        ("http://127.0.0.1:5000 did not answer", "http://127.0.0.1:5000 did not answer"),
    ],
)
def test_credentials_are_masked_and_nothing_else_is(text, shown):
    environ = {"MLFLOW_TRACKING_PASSWORD": "hunter22", "AWS_SECRET_ACCESS_KEY": ""}
    assert redact(text, environ) == shown
    assert (find_secret(text, environ) is None) == (shown == text)


def test_every_line_a_process_shows_is_masked_once_redaction_is_installed(tmp_path):
    """MLflow's logger (a handler of its own, no propagation), a child logger's traceback, a warning and
    an uncaught exception: none shows the password or the token, whichever way it is written."""
    script = """
import logging, os, sys, warnings
os.environ["MLFLOW_TRACKING_TOKEN"] = "tok-5e1f9a"
from model_lib.redaction import install
install()
install()  # twice: nothing doubles
logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
mlflow = logging.getLogger("mlflow")
mlflow.addHandler(logging.StreamHandler(sys.stderr))
mlflow.propagate = False
logging.getLogger("mlflow.tracking").warning("API request to %s failed", "http://bob:pw-7b3c@h:5000/api")
try:
    raise ConnectionError("refused: http://bob:pw-7b3c@h:5000 with tok-5e1f9a")
except ConnectionError:
    logging.getLogger("urllib3.connectionpool").exception("retrying")
warnings.warn("could not reach http://bob:pw-7b3c@h:5000")
raise RuntimeError("gave up on http://bob:pw-7b3c@h:5000")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    shown = result.stdout + result.stderr
    assert "pw-7b3c" not in shown and "tok-5e1f9a" not in shown, shown
    assert "mlflow.tracking" not in shown  # MLflow's own handler, not logging.basicConfig's, printed it
    assert "API request to http://***@h:5000/api failed" in shown
    assert "ConnectionError: refused: http://***@h:5000 with ***" in shown
    assert "UserWarning: could not reach http://***@h:5000" in shown
    assert "RuntimeError: gave up on http://***@h:5000" in shown and "Traceback" in shown


@pytest.mark.parametrize(
    "uri,bare,username,password",
    [
        ("https://alice:p%40ss@mlflow.example.com:8443/base", "https://mlflow.example.com:8443/base", "alice", "p@ss"),
        ("http://bob:pw@[::1]:5000", "http://[::1]:5000", "bob", "pw"),
        ("https://mlflow.example.com", "https://mlflow.example.com", None, None),
        ("postgresql://u:pw@db/mlflow", "postgresql://u:pw@db/mlflow", None, None),  # not MLflow's client: kept
    ],
)
def test_mlflow_is_given_the_tracking_uri_without_user_and_password(uri, bare, username, password):
    environ: dict[str, str] = {}
    assert without_userinfo(uri, environ) == bare
    assert environ.get("MLFLOW_TRACKING_USERNAME") == username and environ.get("MLFLOW_TRACKING_PASSWORD") == password


def test_credentials_in_the_variables_still_win_over_those_in_the_uri():
    environ = {"MLFLOW_TRACKING_USERNAME": "carol", "MLFLOW_TRACKING_PASSWORD": "from-env"}
    assert without_userinfo("https://alice:from-uri@mlflow.example.com", environ) == "https://mlflow.example.com"
    assert environ == {"MLFLOW_TRACKING_USERNAME": "carol", "MLFLOW_TRACKING_PASSWORD": "from-env"}


def test_a_token_as_the_user_name_stays_but_mlflow_does_not_print_the_url():
    environ: dict[str, str] = {}
    assert without_userinfo("https://t0ken@mlflow.example.com", environ) == "https://t0ken@mlflow.example.com"
    assert environ == {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
