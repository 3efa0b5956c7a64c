"""`tox -e image`: the image serving a trained model the way SageMaker hosting runs it:
`<engine> run -p 127.0.0.1:PORT:8080 -v <model dir>:/opt/ml/model IMAGE serve` (SageMaker unpacks
model.tar.gz into /opt/ml/model). It answers /ping, and /invocations with JSON and CSV bodies gives
the probabilities `model-lib predict` gives for the same model and reviews; `stop` (SIGTERM, as
SageMaker stops a container) ends it cleanly within seconds.

The model is the tests' shared tiny training (tests/conftest.py), saved as training saves it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NEGATIVE, POSITIVE, REPO, TinyTraining, free_port
from tests.image.conftest import Image

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.slow]

REVIEWS = [*POSITIVE[:3], *NEGATIVE[:3], 'she said "wonderful" , then "boring"', "a great\u0085 film , truly"]


def start(image: Image, model_dir: Path, name: str, port: int) -> str:
    """Start the container as SageMaker hosting does; return its URL once /ping answers 200."""
    command = [image.engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080"]
    if image.engine == "podman":
        command.append("--no-healthcheck")  # podman 4.3 treats HEALTHCHECK NONE as one and asks systemd for a timer
    command += ["-v", f"{model_dir}:/opt/ml/model:ro", image.name, "serve"]
    subprocess.run(command, env=image.env, check=True, capture_output=True, text=True, timeout=120)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as answer:
                if answer.status == 200:
                    return url
        except OSError:
            time.sleep(0.3)
        state = subprocess.run(
            [image.engine, "inspect", "-f", "{{.State.Running}}", name], env=image.env, capture_output=True, text=True
        )
        if state.stdout.strip() == "false":
            break
    raise AssertionError(f"the container did not answer /ping:\n{logs(image, name)}")


def logs(image: Image, name: str) -> str:
    done = subprocess.run([image.engine, "logs", name], env=image.env, capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr)[-4000:]


def post(url: str, body: bytes, content_type: str, accept: str) -> bytes:
    request = urllib.request.Request(url + "/invocations", body, {"Content-Type": content_type, "Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return answer.read()


@pytest.fixture(scope="module")
def model_dir(tiny_training: TinyTraining, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What SageMaker unpacks from model.tar.gz into /opt/ml/model (the model file is all the server reads)."""
    folder = tmp_path_factory.mktemp("opt_ml_model")
    shutil.copy2(tiny_training.model_file, folder / "model.keras")
    folder.chmod(0o755)
    return folder


@pytest.fixture
def container_name(image: Image) -> Iterator[str]:
    name = f"model-lib-serve-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run([image.engine, "rm", "--force", name], env=image.env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def served(image: Image, model_dir: Path) -> Iterator[str]:
    name = f"model-lib-serve-{uuid.uuid4().hex[:8]}"
    try:
        yield start(image, model_dir, name, free_port())
    finally:
        subprocess.run([image.engine, "rm", "--force", name], env=image.env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def predicted(tiny_training: TinyTraining, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[str]]:
    """What `model-lib predict` gives for REVIEWS: the function it calls, and the figures it prints."""
    from model_lib.inference import load_raw_string_model, predict

    probabilities = predict(load_raw_string_model(tiny_training.model_file), REVIEWS)
    reviews = tmp_path_factory.mktemp("predict") / "reviews.txt"
    reviews.write_text("\n".join(REVIEWS) + "\n", encoding="utf-8")
    # The checkout's model_lib (this env installs no console script): the same main as `model-lib`.
    command = [sys.executable, "-m", "model_lib.cli", "predict", "--model", str(tiny_training.model_file), "--file", str(reviews)]
    printed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True, timeout=300).stdout
    # Split on "\n" only: a review holding U+0085 is one printed line, which splitlines() would cut.
    return probabilities, [line.split("\t")[1] for line in printed.split("\n") if line]


def test_the_container_answers_ping_on_8080(served: str) -> None:
    with urllib.request.urlopen(served + "/ping", timeout=10) as answer:
        assert answer.status == 200


def test_json_invocations_give_the_probabilities_of_model_lib_predict(
    served: str, predicted: tuple[np.ndarray, list[str]]
) -> None:
    probabilities, printed = predicted
    body = post(served, json.dumps({"reviews": REVIEWS}).encode(), "application/json", "application/json")
    served_probabilities = np.asarray(json.loads(body)["probabilities"], dtype=np.float32)
    np.testing.assert_allclose(served_probabilities, probabilities, rtol=0, atol=1e-6)
    assert [f"{p:.4f}" for p in served_probabilities] == printed


def test_csv_invocations_answered_as_csv_give_the_probabilities_of_model_lib_predict(
    served: str, predicted: tuple[np.ndarray, list[str]]
) -> None:
    rows = io.StringIO()
    csv.writer(rows).writerows([review] for review in REVIEWS)
    lines = post(served, rows.getvalue().encode(), "text/csv", "text/csv").decode().split("\n")
    assert lines[-1] == ""
    np.testing.assert_allclose(np.asarray(lines[:-1], dtype=np.float32), predicted[0], rtol=0, atol=1e-6)


def test_a_bad_body_is_a_400_naming_what_was_expected(served: str) -> None:
    request = urllib.request.Request(served + "/invocations", b"a,b\n", {"Content-Type": "text/csv"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 400
    assert "expected one column holding a review" in json.loads(raised.value.read())["error"]


def test_stop_ends_the_server_cleanly_within_seconds(image: Image, model_dir: Path, container_name: str) -> None:
    start(image, model_dir, container_name, free_port())
    started = time.monotonic()
    # SIGTERM to PID 1 (tini), then SIGKILL after 30 s: what SageMaker does to a container it retires.
    subprocess.run([image.engine, "stop", "-t", "30", container_name], env=image.env, check=True, capture_output=True, timeout=90)
    seconds = time.monotonic() - started
    state = subprocess.run(
        [image.engine, "inspect", "-f", "{{.State.ExitCode}}", container_name], env=image.env, capture_output=True, text=True
    )
    assert state.stdout.strip() == "0", logs(image, container_name)
    assert seconds < 20, f"the server took {seconds:.1f} s to stop"
