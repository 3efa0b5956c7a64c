"""The MLflow UI for the README's pictures: a local `mlflow server` and the addresses of its pages.

MLflow offers its assistant panel only to a browser on localhost (MLFLOW_ENABLE_REMOTE_ASSISTANT,
default false, opens it to others), and opens that panel by itself on a first visit. The pictures
show the pages without it: the browser reaches the server under UI_HOST, a name that is not
localhost (Chromium maps it to 127.0.0.1), and the server lets that name and origin in
(--allowed-hosts, --cors-allowed-origins).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

UI_HOST = "mlflow-docs.test"
# Tabs of a run's page, as the UI names them in its addresses.
RUN_TABS = ("overview", "model-metrics", "system-metrics", "artifacts")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(repo: Path, port: int) -> subprocess.Popen[bytes]:
    """Start `mlflow server` on ``repo``'s local store (mlflow.db, mlruns/); return it once /health answers.

    Raises SystemExit if the server exits or does not answer within 120 s.
    """
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{repo}/mlflow.db", "--artifacts-destination", str(repo / "mlruns"),
        "--allowed-hosts", f"{UI_HOST}:{port},127.0.0.1:{port},localhost:{port}",
        "--cors-allowed-origins", f"http://{UI_HOST}:{port}",  # the UI's POSTs carry its origin
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise SystemExit("mlflow server did not answer within 120 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def experiment_of(port: int, run_id: str) -> str:
    """Return the experiment id of ``run_id``, asked of the server."""
    query = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={urllib.parse.quote(run_id)}"
    with urllib.request.urlopen(query, timeout=30) as response:
        return str(json.loads(response.read())["run"]["info"]["experiment_id"])


def ui_root(port: int) -> str:
    return f"http://{UI_HOST}:{port}/"


def run_page(port: int, experiment_id: str, run_id: str, tab: str = "overview") -> str:
    """Return the address of one tab of a run's page: a RUN_TABS name, "artifacts/<path>" for one artifact.

    Raises ValueError for a tab not in RUN_TABS.
    """
    if tab.split("/")[0] not in RUN_TABS:
        raise ValueError(f"run page tab: expected one of {', '.join(RUN_TABS)} (artifacts/<path>), got {tab!r}")
    path = f"experiments/{experiment_id}/runs/{run_id}" + ("" if tab == "overview" else f"/{tab}")
    # workflowType: the UI otherwise starts in its GenAI view in a browser that never chose one.
    return f"{ui_root(port)}#/{path}?workflowType=machine_learning"


def runs_chart_page(port: int, experiment_id: str) -> str:
    """Return the address of the experiment's runs in chart view: each metric charted across its runs."""
    return f"{ui_root(port)}#/experiments/{experiment_id}/runs?compareRunsMode=CHART&workflowType=machine_learning"
