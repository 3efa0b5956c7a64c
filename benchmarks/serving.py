"""Serving speed: the trained default model (models/model.keras, after `make run`) behind the hosting
server (`python -m model_lib.serving`, what the image's `serve` runs) as a local process, measured
through POST /invocations from one client over one keep-alive connection: single-review latency
p50/p99, and throughput in reviews/s for batches of 1, 32 and 512 bundled IMDB reviews (JSON in,
JSON out; CSV for the largest batch too). Also: the server's start (process start to the first
200 from /ping: TensorFlow import, model load, one warm-up prediction) and, for comparison, the
same batches scored in this process with model_lib.inference.predict (no HTTP), so the server's
own share of the latency shows.

    python benchmarks/serving.py [--model models/model.keras] [--requests 200]
Prints a table and writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

MODEL = Path(__file__).resolve().parents[1] / "models" / "model.keras"
BATCHES = (1, 32, 512)
SECONDS_PER_BATCH = 8.0  # each throughput figure: at least this long of back-to-back requests (and 5 requests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start the server; return it and the seconds until /ping answered 200."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "model_lib.serving", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while time.perf_counter() < started + 300:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering /ping")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit("no answer from /ping within 300 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


class Client:
    """One keep-alive connection to /invocations."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def invoke(self, body: bytes, content_type: str) -> bytes:
        self.connection.request("POST", "/invocations", body, {"Content-Type": content_type, "Accept": "application/json"})
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise SystemExit(f"/invocations answered {answer.status}: {data[:300]!r}")
        return data


def json_body(reviews: list[str]) -> bytes:
    return json.dumps({"reviews": reviews}).encode()


def csv_body(reviews: list[str]) -> bytes:
    rows = io.StringIO()
    csv.writer(rows).writerows([review] for review in reviews)
    return rows.getvalue().encode()


def latencies(client: Client, reviews: list[str], count: int) -> np.ndarray:
    """Return the seconds of ``count`` single-review requests, each a different review."""
    seconds = []
    for i in range(count):
        body = json_body([reviews[i % len(reviews)]])
        started = time.perf_counter()
        client.invoke(body, "application/json")
        seconds.append(time.perf_counter() - started)
    return np.asarray(seconds)


def throughput(send, reviews: list[str], batch: int) -> tuple[float, int]:
    """Return (reviews/s, requests sent) for back-to-back batches of ``batch`` reviews."""
    count, done, started = 0, 0, time.perf_counter()
    while count < 5 or time.perf_counter() - started < SECONDS_PER_BATCH:
        start = (count * batch) % max(1, len(reviews) - batch)
        send(reviews[start : start + batch])
        count, done = count + 1, done + batch
    return done / (time.perf_counter() - started), count


def milliseconds(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODEL, help=f"the raw-string model to serve (default {MODEL})")
    parser.add_argument("--requests", type=int, default=200, help="single-review requests for the latency figures")
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: `make run` (or `.venv/bin/dvc repro train`) trains the default model")
    from model_lib.data import load_reviews

    reviews = load_reviews("bundled").texts[:5000]
    load_before = os.getloadavg()[0]  # the figures are only as good as the machine was idle: both are kept
    port = free_port()
    process, startup = start_server(args.model, port)
    print(f"server ready {startup:.1f} s after start ({args.model}, {args.model.stat().st_size / 1e6:.0f} MB)", flush=True)
    try:
        client = Client(port)
        latencies(client, reviews, 10)  # warm-up: the connection, each layer's first call
        single = latencies(client, reviews, args.requests)
        rows = []
        for batch in BATCHES:
            rate, sent = throughput(lambda chunk: client.invoke(json_body(chunk), "application/json"), reviews, batch)
            rows.append({"path": "HTTP, JSON", "batch": batch, "requests": sent, "reviews_per_s": round(rate, 1)})
            print(rows[-1], flush=True)
        rate, sent = throughput(lambda chunk: client.invoke(csv_body(chunk), "text/csv"), reviews, BATCHES[-1])
        rows.append({"path": "HTTP, CSV", "batch": BATCHES[-1], "requests": sent, "reviews_per_s": round(rate, 1)})
    finally:
        stop_server(process)

    from model_lib.inference import load_raw_string_model, predict

    model = load_raw_string_model(args.model)
    predict(model, reviews[:10])
    in_process = []
    for _ in range(args.requests // 2):
        started = time.perf_counter()
        predict(model, [reviews[len(in_process) % len(reviews)]])
        in_process.append(time.perf_counter() - started)
    for batch in BATCHES:
        rate, sent = throughput(lambda chunk: predict(model, chunk), reviews, batch)
        rows.append({"path": "in process (no HTTP)", "batch": batch, "requests": sent, "reviews_per_s": round(rate, 1)})

    latency = {
        "requests": args.requests,
        "p50_ms": milliseconds(single, 50),
        "p99_ms": milliseconds(single, 99),
        "mean_ms": round(float(single.mean()) * 1000, 2),
        "in_process_p50_ms": milliseconds(np.asarray(in_process), 50),
        "in_process_p99_ms": milliseconds(np.asarray(in_process), 99),
    }
    print(f"single review over HTTP: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms (in process: p50 "
          f"{latency['in_process_p50_ms']} ms, p99 {latency['in_process_p99_ms']} ms)")  # fmt: skip
    print(table(rows, ["path", "batch", "requests", "reviews_per_s"]))
    from model_lib.serving import ServingConfig

    config = ServingConfig()
    server = {
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": "gthread (gunicorn)",
        "client": "1 connection",
    }
    path = write_results(
        "serving",
        {
            "model": {"path": str(args.model), "bytes": args.model.stat().st_size},
            "server": server,
            "startup_seconds": round(startup, 2),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "single_review_latency": latency,
            "throughput": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
