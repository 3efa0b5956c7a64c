"""Render the MLflow run page of the pipeline's run (models/mlflow_run.json) to docs/mlflow-run.png.

Starts a real `mlflow server` on the local store (sqlite:///mlflow.db, artefacts in mlruns/) on
127.0.0.1, opens the run page in headless Chromium (Debian's `chromium`), and stops the server.
Run it after `make run`: `make docs-picture`. Exits 0 with a reason, rendering nothing, where no
browser is installed.

    python docs/render_mlflow_run.py [--output docs/mlflow-run.png] [--browser chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    """Start `mlflow server` on the repo's local store; return it once /health answers."""
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{REPO}/mlflow.db", "--artifacts-destination", str(REPO / "mlruns"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
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
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_page(port: int, run_id: str) -> str:
    """Return the UI address of the run's page (the experiment id is read from the server)."""
    query = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(query, timeout=30) as response:
        experiment_id = json.loads(response.read())["run"]["info"]["experiment_id"]
    # workflowType: the UI otherwise starts in its GenAI view in a browser that never chose one.
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def screenshot(browser: str, url: str, output: Path) -> None:
    """Render ``url`` once the page's scripts have run (a virtual-time budget), to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            # No background networking: a closed network refuses those connections, many at a time.
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1440,1500", "--virtual-time-budget=30000",
            f"--screenshot={output}", url,
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "mlflow-run.png", help="PNG to write")
    parser.add_argument("--browser", default=None, help=f"browser binary (default: the first of {', '.join(BROWSERS)})")
    args = parser.parse_args(argv)
    browser = args.browser or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None or shutil.which(browser) is None:
        print(f"render_mlflow_run: skipped: no headless browser ({', '.join(BROWSERS)}); apt-get install chromium")
        return 0
    reference = REPO / "models" / "mlflow_run.json"
    run_id = json.loads(reference.read_text(encoding="utf-8")).get("run_id") if reference.is_file() else None
    if not run_id:
        print(f"render_mlflow_run: error: {reference} names no run; run `make run` first", file=sys.stderr)
        return 2
    port = free_port()
    server = start_server(port)
    try:
        url = run_page(port, run_id)
        screenshot(browser, url, args.output)
    finally:
        stop(server)
    print(f"render_mlflow_run: {url} -> {args.output} ({args.output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
