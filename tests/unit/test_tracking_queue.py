"""The persisted tracking queue, without a server: records go out in order through whatever sink
it is given, survive a killed process in the pending file, a record rejected for good is dropped,
and an epoch the run already holds is not sent again (the MLflow sink, on a local sqlite store)."""

import inspect
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from model_lib.errors import ConfigError
from model_lib.tracking import NullTracker, Tracker, records
from model_lib.tracking.queue import PendingQueue, Refused, Rejected
from tests.conftest import REPO


class RecordingSink:
    """Takes every record; a Start creates run "run-1"."""

    def __init__(self):
        self.sent = []

    def send(self, record, run_id, save):
        self.sent.append((record, run_id))
        return "run-1" if isinstance(record, records.Start) else run_id


class FailingSink:
    """Fails every record (a server that does not answer) until ``up`` is set."""

    def __init__(self, error=ConnectionError("connection refused")):
        self.error = error
        self.calls = 0
        self.up = RecordingSink()
        self.answering = False

    def send(self, record, run_id, save):
        self.calls += 1
        if not self.answering:
            raise self.error
        return self.up.send(record, run_id, save)


def some_records():
    return [
        records.Start("exp"),
        records.Params({"epochs": 3}),
        records.Epoch(0, {"loss": 0.5}),
        records.Epoch(1, {"loss": 0.4}),
        records.Metrics({"test_accuracy": 0.9}),
        records.Model("/m/model.keras", ["a review"], step=1, model_id="m-1"),
        records.Register("imdb"),
        records.End("FINISHED"),
    ]


def queued(sink, path, **options):
    """Return a PendingQueue on ``path`` sending to ``sink``, with some_records() appended, none sent yet."""
    queue = PendingQueue(sink, path, **options)
    for record in some_records():
        queue.append(record)
    return queue


def test_records_are_sent_in_order_with_the_run_id_the_start_gave(tmp_path):
    sink = RecordingSink()
    created = []
    queue = queued(sink, tmp_path / "pending.json", on_run_id=created.append)
    assert queue.flush() is True
    assert [record for record, _ in sink.sent] == some_records()
    assert [run_id for _, run_id in sink.sent] == [None] + ["run-1"] * 7
    assert created == ["run-1"] and queue.run_id == "run-1"
    assert not (tmp_path / "pending.json").exists()  # nothing left: no file


def test_a_server_that_does_not_answer_keeps_every_record_in_the_file_and_backs_off(tmp_path, caplog):
    sink = FailingSink()
    queue = queued(sink, tmp_path / "pending.json", target="MLflow at x")
    with caplog.at_level(logging.WARNING):
        assert queue.flush() is False
        assert queue.flush() is False  # within the back-off: not even tried
    assert sink.calls == 1
    assert "MLflow at x did not take a record (ConnectionError: connection refused)" in caplog.text
    saved = json.loads((tmp_path / "pending.json").read_text())
    assert [entry["op"] for entry in saved["queue"]] == queue.pending == [r.op for r in some_records()]
    sink.answering = True
    assert queue.flush(wait=10) is True  # a wait tries again despite the back-off
    assert [record for record, _ in sink.up.sent] == some_records()
    assert not (tmp_path / "pending.json").exists()


def test_a_record_rejected_for_good_is_dropped_and_the_rest_still_go(tmp_path, caplog):
    class RejectsParams(RecordingSink):
        def send(self, record, run_id, save):
            if isinstance(record, records.Params):
                raise Rejected("INVALID_PARAMETER_VALUE: changing param values is not allowed")
            return super().send(record, run_id, save)

    sink = RejectsParams()
    queue = queued(sink, tmp_path / "pending.json", target="MLflow at x")
    with caplog.at_level(logging.WARNING):
        assert queue.flush() is True
    assert [record for record, _ in sink.sent] == [r for r in some_records() if not isinstance(r, records.Params)]
    assert "MLflow at x refused the params record for good" in caplog.text


def test_a_refusal_before_training_is_a_config_error_and_nothing_is_lost(tmp_path):
    sink = FailingSink(Refused("MLflow at x refused this process: HTTP 403"))
    queue = PendingQueue(sink, tmp_path / "pending.json")
    queue.append(records.Start("exp"))
    with pytest.raises(ConfigError, match="MLflow at x refused this process: HTTP 403"):
        queue.flush(refused_is_fatal=True)
    assert json.loads((tmp_path / "pending.json").read_text())["queue"] == [{"op": "start", "experiment": "exp"}]
    assert queue.flush(wait=0) is False  # later (training under way): waited out like an outage


def test_a_change_the_sink_saves_mid_record_is_in_the_file(tmp_path):
    class CreatesThenFails:
        def send(self, record, run_id, save):
            record.model_id = "m-7"
            save()
            raise TimeoutError("upload timed out")

    queue = PendingQueue(CreatesThenFails(), tmp_path / "pending.json", run_id="run-1")
    queue.append(records.Model("/m/model.keras", ["a review"]))
    assert queue.flush() is False
    (saved,) = json.loads((tmp_path / "pending.json").read_text())["queue"]
    assert saved["model_id"] == "m-7"  # sent again, it does not create a second logged model


KILLED_WRITER = """
import sys, time
from model_lib.tracking.queue import PendingQueue
from tests.unit.test_tracking_queue import some_records

class Down:
    def send(self, record, run_id, save):
        raise ConnectionError("connection refused")

queue = PendingQueue(Down(), sys.argv[1])
for record in some_records():  # the first flush fails: the back-off holds every later record in the file
    queue.append(record)
    queue.flush()
print("queued", flush=True)
time.sleep(600)
"""


def test_records_survive_a_killed_process_and_the_next_one_sends_them_in_order(tmp_path):
    pending = tmp_path / "pending.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(pending)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = writer.stdout.readline()
        assert line == "queued\n", writer.stderr.read()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    sink = RecordingSink()
    queue = PendingQueue(sink, pending)
    assert queue.flush() is True
    assert [record for record, _ in sink.sent] == some_records()
    assert not pending.exists()


def test_a_pending_file_written_by_the_previous_version_is_sent(tmp_path):
    old = {
        "run_id": "run-9",
        "tracking_uri": "http://127.0.0.1:5000",
        "queue": [
            {"op": "status", "status": "RUNNING"},
            {"op": "restart"},
            {"op": "tags", "tags": {"git_commit": "abc"}},
            {"op": "epoch", "step": 2, "metrics": {"loss": 0.3}},
            {"op": "metrics", "metrics": {"train_seconds": 12.5}},
            {"op": "artifacts", "paths": ["/r/roc.png"], "artifact_path": "figures"},
            {"op": "model", "path": "/m/model.keras", "examples": ["a"], "step": 2},
            {"op": "register", "name": "imdb", "model_id": "m-3"},
            {"op": "end", "status": "FINISHED"},
        ],
    }
    (tmp_path / "pending.json").write_text(json.dumps(old))
    sink = RecordingSink()
    queue = PendingQueue(sink, tmp_path / "pending.json")
    assert queue.run_id == "run-9" and queue.flush() is True
    assert [run_id for _, run_id in sink.sent] == ["run-9"] * 9
    assert [record for record, _ in sink.sent] == [
        records.Status("RUNNING"),
        records.Restart(),
        records.Tags({"git_commit": "abc"}),
        records.Epoch(2, {"loss": 0.3}),
        records.Metrics({"train_seconds": 12.5}),
        records.Artifacts(["/r/roc.png"], "figures"),
        records.Model("/m/model.keras", ["a"], step=2),
        records.Register("imdb", "m-3"),
        records.End("FINISHED"),
    ]


def test_a_pending_file_of_another_run_is_left_where_it_is(tmp_path):
    other = {"run_id": "run-A", "queue": [{"op": "end", "status": "FINISHED"}]}
    (tmp_path / "pending.json").write_text(json.dumps(other))
    queue = PendingQueue(RecordingSink(), tmp_path / "pending.json", run_id="run-B")
    assert queue.records == []
    queue.append(records.End("FAILED"))
    assert json.loads((tmp_path / "pending.json").read_text()) == other
    assert json.loads((tmp_path / "pending-run-B.json").read_text())["queue"] == [{"op": "end", "status": "FAILED"}]


def test_a_tracker_whose_server_never_answers_says_what_waits_and_how_to_send_it(tmp_path, caplog):
    tracker = Tracker(FailingSink(), "exp", pending_file=tmp_path / "pending.json", target="MLflow at x")
    tracker.log_params({"epochs": 3, "unset": None})
    tracker.log_epoch(0, {"loss": 0.5})
    tracker.log_epoch(1, {"loss": 0.4})
    with caplog.at_level(logging.WARNING):
        assert tracker.end(wait=0) is False
    assert f"not sent yet: start, params, 2 epoch, end; kept in {tmp_path / 'pending.json'}" in caplog.text
    assert f"model-lib mlflow-sync --checkpoints {tmp_path}" in caplog.text
    params = json.loads((tmp_path / "pending.json").read_text())["queue"][1]
    assert params == {"op": "params", "params": {"epochs": 3, "unset": "null"}}


def test_the_null_tracker_has_every_method_of_the_tracker():
    public = {name for name in dir(Tracker) if not name.startswith("_")} | {"__enter__", "__exit__"}
    assert public <= set(dir(NullTracker))
    for name in public:
        member = getattr(Tracker, name)
        if callable(member):
            assert inspect.signature(member).parameters == inspect.signature(getattr(NullTracker, name)).parameters, name
    with NullTracker() as tracker:
        tracker.log_epoch(0, {"loss": 0.5})
        assert tracker.run_id is None and tracker.pending == [] and tracker.end() is True


class FakeMlflowClient:
    """Stands in for ``mlflow.MlflowClient`` (third-party): keeps the metrics logged, by key."""

    def __init__(self):
        self.metrics = []

    def get_metric_history(self, run_id, key):
        return [m for m in self.metrics if m.key == key]

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.metrics.extend(metrics)


def test_the_mlflow_sink_skips_an_epoch_already_in_the_history_and_sends_the_others():
    from model_lib.tracking.mlflow_sink import MlflowSink

    client = FakeMlflowClient()
    sink = MlflowSink(client, "sqlite:///unused.db")
    queue = PendingQueue(sink, run_id="run-1")
    for record in (records.Epoch(0, {"loss": 0.5, "auc": 0.7}), records.Epoch(1, {"loss": 0.4, "auc": 0.8})):
        queue.append(record)
    assert queue.flush() is True
    resumed = PendingQueue(sink, run_id="run-1")  # the restarted job logs its history again, then a new epoch
    for record in (records.Epoch(0, {"loss": 0.5, "auc": 0.7}), records.Epoch(1, {"loss": 0.4, "auc": 0.8})):
        resumed.append(record)
    resumed.append(records.Epoch(2, {"loss": 0.3, "auc": 0.9}))
    assert resumed.flush() is True
    assert sorted((m.key, m.step) for m in client.metrics) == [(k, s) for k in ("auc", "loss") for s in (0, 1, 2)]


# A real MLflow store (sqlite, no server): creating its tables takes seconds, hence the slow tier.
@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """An MLflow sink on a local sqlite store (no server)."""
    import mlflow

    from model_lib.tracking.mlflow_sink import MlflowSink

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    return MlflowSink(mlflow.MlflowClient(tracking_uri=uri), uri)


@pytest.mark.slow
def test_an_epoch_the_run_holds_is_not_sent_again_on_resume(local_store, tmp_path):
    first = PendingQueue(local_store, tmp_path / "pending.json")
    for record in (records.Start("dedup"), records.Epoch(0, {"loss": 0.5}), records.Epoch(1, {"loss": 0.4})):
        first.append(record)
    assert first.flush() is True
    run_id = first.run_id
    resumed = PendingQueue(local_store, tmp_path / "pending.json", run_id=run_id)  # the restarted job
    for record in (records.Epoch(1, {"loss": 0.4}), records.Epoch(2, {"loss": 0.3}), records.End("FINISHED")):
        resumed.append(record)
    assert resumed.flush() is True
    history = local_store.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2]  # each epoch once
    assert local_store.client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_the_mlflow_sink_drops_a_changed_param_and_a_missing_run_and_sends_the_rest(local_store, tmp_path):
    queue = PendingQueue(local_store, tmp_path / "pending.json")
    for record in (records.Start("rejects"), records.Params({"epochs": 3}), records.Params({"epochs": 4})):
        queue.append(record)
    queue.append(records.End("FINISHED"))
    assert queue.flush() is True  # HTTP 400 (a changed param): dropped, the end still sent
    run = local_store.client.get_run(queue.run_id)
    assert run.data.params == {"epochs": "3"} and run.info.status == "FINISHED"
    with pytest.raises(Rejected):  # HTTP 404: a run that does not exist
        local_store.send(records.Status("RUNNING"), "0" * 32, lambda: None)


@pytest.mark.slow
def test_the_mlflow_sink_counts_restarts(local_store, tmp_path):
    queue = PendingQueue(local_store, tmp_path / "pending.json")
    for record in (records.Start("restarts"), records.Restart(), records.Restart()):
        queue.append(record)
    assert queue.flush() is True
    from model_lib.tracking.mlflow_sink import RESTARTS_TAG

    assert local_store.client.get_run(queue.run_id).data.tags[RESTARTS_TAG] == "2"
