"""Every door a user can put something into (params files, flags, files, env vars) answers bad input
with one stderr line naming the file/key/value and what was expected, and exit code 2 (docs/doors.md)."""

import json
from pathlib import Path

import pytest

from model_lib.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Return main(argv)'s exit code and its stderr (a traceback fails the test)."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if ": error: " in line or "Traceback" in line]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    "params,expected",
    [
        ("train: [1, 2]\n", "params.yaml: train: expected a mapping of settings, got a list"),
        ("train: fast\n", "params.yaml: train: expected a mapping of settings, got a string"),
        ("train: 3\n", "params.yaml: train: expected a mapping of settings, got an integer"),
        # PyYAML keeps the last of a repeated key silently: a typo'd copy would win unseen.
        ("train:\n  epochs: 1\n  epochs: 5\n", "params.yaml: line 3, column 3: train.epochs: key repeated (first on line 2)"),
        ("train:\n  epochs: 1\ntrain:\n  epochs: 5\n", "params.yaml: line 3, column 1: train: key repeated (first on line 1)"),
    ],
)
def test_params_of_the_wrong_shape_or_with_a_repeated_key_are_one_line(tmp_path, monkeypatch, capsys, params, expected):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(params, encoding="utf-8")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2 and one_error_line(err) == f"model-lib train: error: {expected}"


def test_a_params_file_not_utf8_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_bytes(b"train:\n  model: \xff\xfe\n")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2
    assert "params.yaml: expected a UTF-8 text file, got byte 0xff at offset 16" in one_error_line(err)


def test_a_params_file_not_yaml_is_one_line_naming_line_and_column(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("train:\n  epochs: [\n", encoding="utf-8")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert err.startswith("model-lib train: error: params.yaml: line 3, column 1: expected YAML")


def test_a_params_folder_is_not_a_params_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("conf").mkdir()
    code, err = run_cli(capsys, "train", "--no-mlflow", "--params", "conf")
    assert code == 2 and "conf: params file not found" in one_error_line(err)


def test_keys_of_several_types_are_named_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("train:\n  1: 2\n  epoch: 3\n", encoding="utf-8")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2 and "params.yaml: train: unknown key 'epoch';" in one_error_line(err)


@pytest.mark.parametrize("section", ["ingest", "prepare", "train"])
@pytest.mark.parametrize("seed", ["4294967296", "100000000000000000000"])
def test_a_seed_beyond_32_bits_is_refused_at_the_door(tmp_path, monkeypatch, capsys, section, seed):
    monkeypatch.chdir(tmp_path)  # no data here: a checked seed fails before anything is read
    Path("params.yaml").write_text(f"{section}:\n  seed: {seed}\n", encoding="utf-8")
    code, err = run_cli(capsys, section, *(["--no-mlflow"] if section == "train" else []))
    assert code == 2
    assert f"params.yaml: {section}.seed: expected an integer from 0 to 4294967295, got {seed}" in one_error_line(err)


def test_the_largest_seed_is_taken(tmp_path, monkeypatch, tiny_reviews, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(f"ingest:\n  source: {tiny_reviews}\n  limit: 20\n  seed: 4294967295\n", encoding="utf-8")
    code, err = run_cli(capsys, "ingest")
    assert code == 0, err


@pytest.mark.parametrize("seed,got", [("true", "True"), ("1.5", "1.5"), ("-1", "-1")])
def test_a_seed_that_is_not_a_natural_number_is_refused(tmp_path, monkeypatch, capsys, seed, got):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(f"train:\n  seed: {seed}\n", encoding="utf-8")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2 and "params.yaml: train.seed: expected" in one_error_line(err) and got in err


# --- predict ---------------------------------------------------------------------------------


@pytest.fixture
def not_a_raw_string_model(tmp_path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    path = tmp_path / "dense.keras"
    model.save(path)
    return path


def test_predict_file_not_utf8_names_the_file_and_the_line(tmp_path, capsys, not_a_raw_string_model):
    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes(b"a good film\nbad \xff bytes\n")
    code, err = run_cli(capsys, "predict", "--model", str(not_a_raw_string_model), "--file", str(reviews))
    assert code == 2
    assert f"{reviews}: line 2: expected UTF-8 text, got byte 0xff" in one_error_line(err)


def test_predict_binary_stdin_is_one_line(monkeypatch, capsys, not_a_raw_string_model):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x00\x9c\xff binary"), encoding="utf-8"))
    code, err = run_cli(capsys, "predict", "--model", str(not_a_raw_string_model), "--file", "-")
    assert code == 2 and "stdin: line 1: expected UTF-8 text, got byte 0x9c" in one_error_line(err)


@pytest.mark.parametrize("kind", ["text", "truncated", "folder"])
def test_predict_with_a_file_that_is_not_a_model(tmp_path, capsys, not_a_raw_string_model, kind):
    path = tmp_path / "model.keras"
    if kind == "text":
        path.write_text("not a model", encoding="utf-8")
    elif kind == "truncated":
        data = not_a_raw_string_model.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.mkdir()
    code, err = run_cli(capsys, "predict", "--model", str(path), "a good film")
    assert code == 2
    line = one_error_line(err)
    assert str(path) in line and ("expected a .keras model file" in line or "model file not found" in line)


def test_predict_with_a_model_of_another_kind(capsys, not_a_raw_string_model):
    code, err = run_cli(capsys, "predict", "--model", str(not_a_raw_string_model), "a good film")
    assert code == 2
    assert f"{not_a_raw_string_model}: expected a raw-string model (one string input, one P(positive) output)" in (
        one_error_line(err)
    )


@pytest.mark.parametrize("threshold", ["nan", "1.5", "-0.1", "inf"])
def test_predict_threshold_outside_0_1_is_refused(capsys, not_a_raw_string_model, threshold):
    code, err = run_cli(capsys, "predict", "--model", str(not_a_raw_string_model), "--threshold", threshold, "a")
    assert code == 2 and f"--threshold: expected a number from 0 to 1, got {threshold}" in one_error_line(err)


# --- mlflow-sync -------------------------------------------------------------------------------


GOOD = [{"op": "start", "experiment": "e"}, {"op": "params", "params": {"a": 1}}, {"op": "end", "status": "FINISHED"}]


@pytest.mark.parametrize(
    "content,expected",
    [
        ("{not json", "expected JSON, got"),
        (json.dumps([1, 2]), "expected a JSON object with a 'queue' list, got a list"),
        (json.dumps({"run_id": None, "queue": "x"}), "queue: expected a list of records, got a string"),
        (json.dumps({"run_id": None, "queue": [*GOOD[:2], 7]}), "queue[2]: expected a JSON object with an 'op', got 7"),
        (json.dumps({"run_id": None, "queue": [*GOOD[:1], {"op": "teleport"}]}), "queue[1]: unknown record 'teleport'"),
        (
            json.dumps({"run_id": None, "queue": [{"op": "start", "experiment": "e", "colour": "red"}]}),
            "queue[0]: 'start' record: unknown field 'colour'",
        ),
        (
            json.dumps({"run_id": None, "queue": [{"op": "epoch", "metrics": {}}]}),
            "queue[0]: 'epoch' record: missing field 'step'",
        ),
        (
            json.dumps({"run_id": None, "queue": [{"op": "epoch", "step": "two", "metrics": {}}]}),
            "queue[0]: 'epoch' record: step: expected an integer, got 'two'",
        ),
        (
            json.dumps({"run_id": 5, "queue": GOOD}),
            "run_id: expected a string or null, got 5",
        ),
    ],
)
def test_mlflow_sync_with_a_malformed_pending_file_names_file_and_record(tmp_path, capsys, content, expected):
    pending = tmp_path / "mlflow-pending.json"
    pending.write_text(content, encoding="utf-8")
    code, err = run_cli(capsys, "mlflow-sync", "--checkpoints", str(tmp_path), "--wait", "0")
    assert code == 2
    assert f"{pending}: {expected}" in one_error_line(err)
    assert pending.read_text(encoding="utf-8") == content  # the good records are still there to send


def test_mlflow_sync_pending_file_not_utf8(tmp_path, capsys):
    pending = tmp_path / "mlflow-pending.json"
    pending.write_bytes(b'{"queue": ["\xff"]}')
    code, err = run_cli(capsys, "mlflow-sync", "--checkpoints", str(tmp_path))
    assert code == 2 and f"{pending}: expected a UTF-8 text file" in one_error_line(err)
    assert pending.is_file()


@pytest.mark.parametrize("wait", ["nan", "-1", "inf"])
def test_mlflow_sync_wait_must_be_a_finite_number_of_seconds(tmp_path, capsys, wait):
    code, err = run_cli(capsys, "mlflow-sync", "--checkpoints", str(tmp_path), "--wait", wait)
    assert code == 2 and f"--wait: expected a number of seconds >= 0, got {wait}" in one_error_line(err)


# --- environment variables ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_mlflow_wait_seconds_env_is_checked(monkeypatch, value):
    from model_lib.errors import ConfigError
    from model_lib.tracking.tracker import WAIT_ENV, wait_seconds

    monkeypatch.setenv(WAIT_ENV, value)
    with pytest.raises(ConfigError, match=f"^{WAIT_ENV}: expected a number of seconds >= 0, got '{value}'$"):
        wait_seconds()


def test_poll_seconds_env_is_checked(tmp_path, monkeypatch, capsys):
    from model_lib.sagemaker.remote import POLL_SECONDS_ENV

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    monkeypatch.setenv("MODEL_LIB_TRAIN_ON", "sagemaker")
    monkeypatch.setenv(POLL_SECONDS_ENV, "often")
    code, err = run_cli(capsys, "train")
    assert code == 2
    assert f"{POLL_SECONDS_ENV}: expected a number of seconds > 0, got 'often'" in one_error_line(err)


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("SM_CHANNELS", "5", "SM_CHANNELS: expected a JSON list of channel names, got '5'"),
        ("SM_CHANNELS", '["train", 3]', "SM_CHANNELS: expected a JSON list of channel names, got '[\"train\", 3]'"),
        ("SM_HPS", "[1, 2]", "SM_HPS: expected a JSON object of hyperparameters, got '[1, 2]'"),
        ("SM_TRAINING_ENV", '"x"', "SM_TRAINING_ENV: expected a JSON object, got '\"x\"'"),
    ],
)
def test_sagemaker_json_variables_of_the_wrong_shape(tmp_path, name, value, expected):
    from model_lib.errors import SageMakerEnvironmentError
    from model_lib.sagemaker.environment import SageMakerEnvironment

    environ = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "out"), name: value}
    with pytest.raises(SageMakerEnvironmentError) as raised:
        SageMakerEnvironment.from_env(environ, argv=[])
    assert str(raised.value) == expected


def test_a_pending_file_train_cannot_read_is_kept_beside_not_overwritten(tmp_path, caplog):
    from model_lib.tracking import records
    from model_lib.tracking.queue import PendingQueue

    class Sink:
        def send(self, record, run_id, save):
            return "run-1"

    pending = tmp_path / "mlflow-pending.json"
    pending.write_text('{"run_id": "run-0", "queue": [{"op": "end", "status": "FINI', encoding="utf-8")  # cut short
    queue = PendingQueue(Sink(), pending)
    queue.append(records.Start("e"))
    aside = tmp_path / "mlflow-pending.json.unreadable"
    assert aside.read_text(encoding="utf-8").endswith('"FINI')
    assert f"{pending}: expected JSON" in caplog.text and str(aside) in caplog.text


def test_a_pending_record_of_a_newer_version_is_skipped_and_the_others_kept(tmp_path):
    from model_lib.tracking.queue import PendingQueue

    pending = tmp_path / "mlflow-pending.json"
    pending.write_text(json.dumps({"run_id": None, "queue": [GOOD[0], {"op": "teleport"}, GOOD[2]]}), encoding="utf-8")
    queue = PendingQueue(object(), pending)  # type: ignore[arg-type] - nothing is sent here
    assert queue.pending == ["start", "end"]


@pytest.mark.parametrize("value", ["not json", '["a"]', '{"team": {"nested": 1}}'])
def test_mlflow_tags_env_is_checked_before_a_run_opens(tmp_path, monkeypatch, capsys, value):
    from model_lib.tracking.lineage import TAGS_ENV

    monkeypatch.chdir(tmp_path)  # no data: the variable is checked first
    Path("params.yaml").write_text("train:\n  epochs: 1\nevaluate:\n  threshold: 0.5\n", encoding="utf-8")
    monkeypatch.setenv(TAGS_ENV, value)
    for command in ("train", "evaluate", "launch"):
        code, err = run_cli(capsys, command)
        assert code == 2
        assert f"{TAGS_ENV}: expected a JSON object of tags" in one_error_line(err) and repr(value) in err
    assert not Path("mlflow.db").exists()


def test_mlflow_tags_env_values_become_strings(monkeypatch):
    from model_lib.tracking.lineage import TAGS_ENV, user_tags

    monkeypatch.setenv(TAGS_ENV, '{"team": "nlp", "budget": 3}')
    assert user_tags() == {"team": "nlp", "budget": "3"}


@pytest.mark.parametrize("seconds", ["nan", "-1", "0"])
def test_sagemaker_local_interrupt_after_must_be_positive_seconds(tmp_path, capsys, seconds):
    code, err = run_cli(capsys, "sagemaker-local", "--job", "j", "--interrupt-after", seconds, "--base-dir", str(tmp_path))
    assert code == 2 and f"--interrupt-after: expected a number of seconds > 0, got {seconds}" in one_error_line(err)


def test_sagemaker_local_with_an_aws_endpoint_that_does_not_answer_is_one_line(tmp_path, capsys, monkeypatch):
    from tests.conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, err = run_cli(capsys, "sagemaker-local", "--job", "j", "--base-dir", str(tmp_path / "base"))
    line = one_error_line(err)
    assert code == 2 and line.startswith("model-lib sagemaker-local: error: AWS: Could not connect to the endpoint URL")
    assert endpoint in line and "AWS_ENDPOINT_URL" in line


@pytest.mark.parametrize(
    "content,expected",
    [
        ("{cut", "expected a JSON object with a run_id, got"),
        ("[1]", "expected a JSON object with a run_id, got"),
        ('{"run_id": 7}', "run_id: expected a string or null, got 7"),
    ],
)
def test_a_malformed_run_reference_names_the_file(tmp_path, content, expected):
    from model_lib.errors import DataError
    from model_lib.tracking import read_run_reference

    path = tmp_path / "mlflow_run.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}: {expected}"):
        read_run_reference(path)


def test_a_run_reference_of_another_model_is_not_followed(tmp_path, caplog):
    from model_lib.tracking import read_run_reference, write_run_reference

    path = tmp_path / "mlflow_run.json"
    write_run_reference(path, "abc123", model_md5="11" * 16)
    assert read_run_reference(path, model_md5="11" * 16) == "abc123"
    assert read_run_reference(path) == "abc123"  # no model to compare with: the run as written
    with caplog.at_level("WARNING"):
        assert read_run_reference(path, model_md5="22" * 16) is None
    assert "names MLflow run abc123, which made another model" in caplog.text


@pytest.mark.parametrize("content", ["{cut", '{"epochs": []}', '{"history": 3}'])
def test_a_malformed_history_file_names_the_file(tmp_path, content):
    from model_lib.errors import DataError
    from model_lib.pipeline import read_history

    path = tmp_path / "history.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}: expected a JSON object with a 'history' list of epochs"):
        read_history(path)


def test_a_predict_argument_that_is_not_utf8_is_one_line(capsys, not_a_raw_string_model):
    import os

    text = os.fsdecode(b"fine \xff film")  # what Python makes of a non-UTF-8 argument (surrogateescape)
    code, err = run_cli(capsys, "predict", "--model", str(not_a_raw_string_model), "a good film", text)
    assert code == 2 and "TEXT 2: expected UTF-8 text, got byte 0xff" in one_error_line(err)


@pytest.mark.parametrize(
    "setting,expected",
    [
        ("batch_size: 100000000000000000000", "train.batch_size: expected an integer up to 2147483647"),
        ("checkpoint_steps: 2147483648", "train.checkpoint_steps: expected an integer up to 2147483647"),
        ("threads: 100000", "train.threads: expected an integer from 1 to 1024, got 100000"),
    ],
)
def test_an_integer_setting_too_large_to_train_with_is_refused_at_the_door(tmp_path, monkeypatch, capsys, setting, expected):
    monkeypatch.chdir(tmp_path)  # no data here: before the fix these reached training (OverflowError, a hang)
    Path("params.yaml").write_text(f"train:\n  {setting}\n", encoding="utf-8")
    code, err = run_cli(capsys, "train", "--no-mlflow")
    assert code == 2 and f"params.yaml: {expected}" in one_error_line(err)


def test_predict_takes_the_raw_string_model_and_utf8_input(tmp_path, monkeypatch, capsys, tiny_training):
    import io
    import sys

    reviews = tmp_path / "reviews.txt"
    reviews.write_bytes("a wonderful film\u0085 truly\ncaf\u00e9 dull\n".encode())  # NEL stays inside its line
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a dull film\n"), encoding="utf-8"))
    code = main(["predict", "--model", str(tiny_training.model_file), "--file", str(reviews), "fine"])
    out = capsys.readouterr().out.rstrip("\n").split("\n")
    assert code == 0 and len(out) == 3 and out[1].endswith("\ta wonderful film\u0085 truly")
    code = main(["predict", "--model", str(tiny_training.model_file), "--file", "-"])
    assert code == 0 and capsys.readouterr().out.strip().endswith("\ta dull film")


@pytest.mark.parametrize("uri", ["not a uri", "./mlruns", "file:///tmp/mlruns"])
def test_mlflow_sync_to_a_file_store_is_one_line_and_keeps_the_records(tmp_path, monkeypatch, capsys, uri):
    pending = tmp_path / "mlflow-pending.json"
    pending.write_text(json.dumps({"run_id": None, "queue": GOOD}), encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    code, err = run_cli(capsys, "mlflow-sync", "--checkpoints", str(tmp_path), "--wait", "0")
    assert code == 2
    assert f"MLFLOW_TRACKING_URI={uri!r}: a file store, which MLflow 3 refuses" in one_error_line(err)
    assert json.loads(pending.read_text(encoding="utf-8"))["queue"] == GOOD
