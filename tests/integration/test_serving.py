"""`python -m model_lib.serving` as a real process on the shared tiny model (the image's `serve` runs
the same main): SageMaker's port variable, /ping, and /invocations answering exactly what
model_lib.inference.predict (the code of `model-lib predict`) gives for the same reviews."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from model_lib.serving import PORT_ENV
from tests.conftest import NEGATIVE, POSITIVE, TinyTraining, free_port, serving

pytestmark = [pytest.mark.integration]

# Commas, quotes, a line break, NEL (U+0085, in IMDB texts): what CSV quoting and "\n"-only splitting must keep whole.
REVIEWS = [*POSITIVE[:3], *NEGATIVE[:3], 'she said "wonderful" , then "boring"', "a great\u0085 film , truly"]


def post(url: str, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url + "/invocations", body, {"Content-Type": content_type, "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tiny_training: TinyTraining) -> Iterator[str]:
    """The server on the tiny model, its port given as SageMaker gives it (SAGEMAKER_BIND_TO_PORT)."""
    port = free_port()
    env = {**os.environ, PORT_ENV: str(port), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "model_lib.serving", "--model", str(tiny_training.model_file), "--host", "127.0.0.1"]
    with serving(command, "/ping", port, env, seconds=90) as url:
        yield url


@pytest.fixture(scope="module")
def expected(tiny_training: TinyTraining) -> np.ndarray:
    from model_lib.inference import load_raw_string_model, predict

    return predict(load_raw_string_model(tiny_training.model_file), REVIEWS)


def test_ping_answers_200_on_the_port_sagemaker_names(server: str) -> None:
    with urllib.request.urlopen(server + "/ping", timeout=10) as answer:
        assert answer.status == 200


def test_json_reviews_get_exactly_the_probabilities_predict_gives(server: str, expected: np.ndarray) -> None:
    status, body = post(server, json.dumps({"reviews": REVIEWS}).encode(), "application/json")
    assert status == 200, body
    assert np.array_equal(np.asarray(json.loads(body)["probabilities"], dtype=np.float32), expected)


def test_csv_reviews_answered_as_csv_get_exactly_the_probabilities_predict_gives(server: str, expected: np.ndarray) -> None:
    rows = io.StringIO()
    csv.writer(rows).writerows([review] for review in REVIEWS)
    status, body = post(server, rows.getvalue().encode(), "text/csv", accept="text/csv")
    assert status == 200, body
    lines = body.decode().split("\n")
    assert lines[-1] == "" and np.array_equal(np.asarray(lines[:-1], dtype=np.float32), expected)


def test_a_bad_body_is_a_400_with_the_reason_not_a_traceback(server: str) -> None:
    status, body = post(server, b'{"reviews": "one film"}', "application/json")
    assert status == 400
    assert json.loads(body) == {"error": "reviews: expected a list of review strings, got a string"}
