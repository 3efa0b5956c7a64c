"""The hosting contract's app (model_lib.serving) through Flask's test client, with a stand-in model:
what each body gives, and the status and one-line reason of each bad request. The real model behind
a real server: tests/integration/test_serving.py; in the image, under podman: tests/image/test_serving.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model_lib import serving
from model_lib.errors import DataError


class StandIn:
    """Scores a review by its length (len / 1000), so the answer shows which reviews arrived, in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict(self, reviews: Sequence[str]) -> np.ndarray:
        self.calls.append(list(reviews))
        if any(not review.strip() for review in reviews):
            raise DataError("review 1: expected some words, got ' '")
        return np.asarray([len(review) / 1000 for review in reviews], dtype=np.float32)


class Broken:
    def predict(self, reviews: Sequence[str]) -> np.ndarray:
        raise RuntimeError("secret internal detail")


def client(predictor: object, **config: object):  # type: ignore[no-untyped-def]
    app = serving.create_app(serving.ServingConfig(**config), predictor=predictor)  # type: ignore[arg-type]
    return app.test_client()


def scores(*reviews: str) -> list[float]:
    return [float(np.float32(len(review) / 1000)) for review in reviews]


@pytest.fixture
def stand_in() -> StandIn:
    return StandIn()


def test_ping_answers_200(stand_in: StandIn) -> None:
    assert client(stand_in).get("/ping").status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"reviews": ["a good film", "bad"]}, {"instances": ["a good film", "bad"]}, ["a good film", "bad"]],
    ids=["reviews", "instances", "bare-list"],
)
def test_json_bodies_give_one_probability_per_review_in_order(stand_in: StandIn, body: object) -> None:
    answer = client(stand_in).post("/invocations", json=body)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_json() == {"probabilities": scores("a good film", "bad")}


def test_csv_body_reads_quoted_commas_quotes_and_line_breaks_as_one_review(stand_in: StandIn) -> None:
    body = '"a good, long film"\n"she said ""wow""\nand left"\r\nplain one\n'
    answer = client(stand_in).post("/invocations", data=body.encode(), content_type="text/csv")
    assert answer.status_code == 200, answer.get_json()
    assert stand_in.calls == [["a good, long film", 'she said "wow"\nand left', "plain one"]]


def test_plain_text_is_one_review_per_line_split_on_newline_only(stand_in: StandIn) -> None:
    # U+0085 (NEL) and U+2028 are in IMDB texts: str.splitlines() would cut a review there.
    body = "first\u0085still first\r\nsecond \u2028 too\n"
    answer = client(stand_in).post("/invocations", data=body.encode(), content_type="text/plain; charset=utf-8")
    assert answer.status_code == 200
    assert stand_in.calls == [["first\u0085still first", "second \u2028 too"]]


def test_accept_text_csv_answers_one_probability_per_line_that_reads_back_exactly(stand_in: StandIn) -> None:
    answer = client(stand_in).post("/invocations", json=["a good film", "bad"], headers={"Accept": "text/csv"})
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    lines = answer.get_data(as_text=True).split("\n")
    assert lines[-1] == "" and [np.float32(line) for line in lines[:-1]] == [np.float32(s) for s in scores("a good film", "bad")]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b"", "body: expected {\"reviews\""),
        ("application/json", b"{bad", "body: expected JSON, got Expecting property name"),
        ("application/json", b'{"reviews": "one film"}', "reviews: expected a list of review strings, got a string"),
        ("application/json", b'{"reviews": []}', "reviews: expected at least one review, got an empty list"),
        ("application/json", b'{"reviews": ["ok", 3]}', "reviews[1]: expected a review string, got a number (3)"),
        ("application/json", b'{"review": ["ok"]}', "body: expected one of the keys 'reviews', 'instances', got keys ['review']"),
        ("application/json", b'{"reviews": ["a"], "instances": ["b"]}', "body: expected one of the keys"),
        ("application/json", b'"one film"', "body: expected {\"reviews\""),
        ("application/json", b'[" "]', "review 1: expected some words"),
        ("text/csv", b"a,b\n", "body: record 1 (line 1): expected one column holding a review (quote a review"),
        ("text/csv", b"ok\n\nok\n", "body: record 2 (line 2): expected one column holding a review"),
        ("text/plain", b"ok\n \nok", "body: line 2: expected a review, got an empty line"),
        ("text/plain", b"ok \xff", "body: expected UTF-8 text, got byte 0xff at offset 3"),
    ],
    ids=[
        "empty", "bad-json", "not-a-list", "empty-list", "not-a-string", "unknown-key", "both-keys", "bare-string",
        "blank-review", "csv-two-columns", "csv-blank-record", "plain-blank-line", "not-utf8",
    ],
)  # fmt: skip
def test_a_bad_body_is_400_saying_what_was_expected(stand_in: StandIn, content_type: str, body: bytes, expected: str) -> None:
    answer = client(stand_in).post("/invocations", data=body, content_type=content_type)
    assert answer.status_code == 400 and answer.mimetype == "application/json"
    assert answer.get_json()["error"].startswith(expected), answer.get_json()


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "application/x-npy", "text/plain; charset=latin-1", None]
)
def test_an_unsupported_content_type_is_415_naming_the_ones_read(stand_in: StandIn, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client(stand_in).post("/invocations", data=b"a film", headers=headers)
    assert answer.status_code == 415
    assert answer.get_json()["error"].startswith("Content-Type: expected "), answer.get_json()
    assert stand_in.calls == []


def test_an_accept_we_cannot_write_is_406(stand_in: StandIn) -> None:
    answer = client(stand_in).post("/invocations", json=["a film"], headers={"Accept": "image/png"})
    assert answer.status_code == 406 and "application/json, text/csv" in answer.get_json()["error"]


def test_a_body_above_the_limit_is_413_before_the_model_sees_it(stand_in: StandIn) -> None:
    answer = client(stand_in, max_payload_mb=0.001).post("/invocations", data=b"x" * 1001, content_type="text/plain")
    assert answer.status_code == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in answer.get_json()["error"]
    assert stand_in.calls == []


def test_an_unexpected_error_is_500_without_its_details(caplog: pytest.LogCaptureFixture) -> None:
    answer = client(Broken()).post("/invocations", json=["a film"])
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal error: see the server's log"}
    assert "secret internal detail" in caplog.text  # the traceback is in the server's log


def test_unknown_paths_and_methods_are_json_errors(stand_in: StandIn) -> None:
    assert client(stand_in).get("/predict").status_code == 404
    assert client(stand_in).get("/invocations").status_code == 405


def test_execution_parameters_tell_batch_transform_the_payload_limit(stand_in: StandIn) -> None:
    answer = client(stand_in, max_payload_mb=20.0).get("/execution-parameters")
    assert answer.get_json() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 20}


def test_sagemaker_variables_set_the_port_workers_and_payload_limit() -> None:
    args = serving.build_parser().parse_args([])
    environ = {"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50"}
    config = serving.config_from(args, environ)
    assert (config.port, config.workers, config.max_payload_mb) == (9000, 2, 50.0)
    assert config.model == Path("/opt/ml/model/model.keras") and config.host == "0.0.0.0"
    assert serving.config_from(args, {}).port == 8080


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT: expected an integer, got 'http'"),
        ([], {"SAGEMAKER_BIND_TO_PORT": "70000"}, "SAGEMAKER_BIND_TO_PORT: expected a port number from 1 to 65535, got 70000"),
        (["--port", "0"], {}, "--port: expected a port number from 1 to 65535, got 0"),
        ([], {"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "SAGEMAKER_MODEL_SERVER_WORKERS: expected at least 1, got 0"),
        ([], {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "nan"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB: expected a number of MB > 0, got nan"),
        (
            ["--model", "missing.keras"],
            {},
            "missing.keras: model file not found (SageMaker unpacks model.tar.gz into /opt/ml/model)",
        ),
    ],
    ids=["port-not-a-number", "port-out-of-range", "flag-port-zero", "no-workers", "payload-nan", "no-model"],
)
def test_serve_refuses_a_bad_setting_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str], expected: str
) -> None:
    for name in (serving.PORT_ENV, serving.WORKERS_ENV, serving.PAYLOAD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert serving.main(argv) == 2
    assert capsys.readouterr().err == f"model-lib-serve: error: {expected}\n"


def test_the_served_model_file_is_the_one_training_writes() -> None:
    from model_lib.sagemaker.jobs import MODEL_FILE

    assert serving.MODEL_FILE == MODEL_FILE


def test_json_answers_read_back_as_the_same_float32() -> None:
    probabilities = np.asarray([0.1, 1 / 3, 0.999999, 1e-8], dtype=np.float32)
    body, media_type = serving.format_probabilities(probabilities, "application/json")
    assert media_type == "application/json"
    assert np.array_equal(np.asarray(json.loads(body)["probabilities"], dtype=np.float32), probabilities)
