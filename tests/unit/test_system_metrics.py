"""System metrics without a server: the switch and the interval are checked where they come in, the
monitor names each host's series, waits for the run to exist, and never holds anyone up when the
server hangs. (Through a real `mlflow server`: tests/integration/test_pipeline.py,
test_multi_instance.py and test_tracking_outage.py.)"""

import json
import threading
import time

import pytest

from model_lib.errors import ConfigError
from model_lib.tracking import Tracker, records, system_metrics
from model_lib.tracking.system_metrics import (
    DEFAULT_INTERVAL_SECONDS,
    INTERVAL_ENV,
    SYSTEM_METRICS_ENV,
    SystemMetricsSettings,
    SystemMonitor,
    settings,
)
from tests.unit import test_tracking_queue


class RecordingSink(test_tracking_queue.RecordingSink):
    """Takes every record (a Start creates run "run-1"), and names the system samples among them."""

    def system(self):
        return [(record, run_id) for record, run_id in self.sent if isinstance(record, records.SystemMetrics)]


class HangingSink:
    """A server that accepts the connection and never answers (until released)."""

    def __init__(self):
        self.release = threading.Event()

    def send(self, record, run_id, save):
        self.release.wait(60)
        raise TimeoutError("read timed out")


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, SystemMetricsSettings(True, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: ""}, SystemMetricsSettings(True, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: "false"}, SystemMetricsSettings(False, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: " FALSE "}, SystemMetricsSettings(False, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: "0"}, SystemMetricsSettings(False, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: "off"}, SystemMetricsSettings(False, DEFAULT_INTERVAL_SECONDS)),
        ({SYSTEM_METRICS_ENV: "True", INTERVAL_ENV: "0.5"}, SystemMetricsSettings(True, 0.5)),
    ],
)
def test_system_metrics_are_on_unless_switched_off(environ, expected):
    assert settings(environ) == expected


@pytest.mark.parametrize(
    "environ,message",
    [
        (
            {SYSTEM_METRICS_ENV: "maybe"},
            f"{SYSTEM_METRICS_ENV}: expected true or false (true/1/yes/on or false/0/no/off), got 'maybe'",
        ),
        ({INTERVAL_ENV: "often"}, f"{INTERVAL_ENV}: expected a number of seconds > 0, got 'often'"),
        ({INTERVAL_ENV: "0"}, f"{INTERVAL_ENV}: expected a number of seconds > 0, got '0'"),
    ],
)
def test_a_bad_switch_or_interval_is_a_config_error_naming_the_variable(environ, message):
    with pytest.raises(ConfigError) as raised:
        settings(environ)
    assert str(raised.value) == message


def test_a_host_of_a_multi_host_job_sends_its_samples_under_its_own_name():
    sink = RecordingSink()
    with SystemMonitor(sink, lambda: "run-1", node="algo-2", interval=0.05):
        time.sleep(0.3)
    sent = sink.system()
    assert len(sent) >= 3 and {run_id for _, run_id in sent} == {"run-1"}
    assert [record.step for record, _ in sent] == list(range(len(sent)))
    names = set(sent[0][0].metrics)
    assert {"system/algo-2/cpu_utilization_percentage", "system/algo-2/system_memory_usage_megabytes",
            "system/algo-2/disk_usage_percentage", "system/algo-2/network_receive_megabytes"} <= names  # fmt: skip
    assert all(name.startswith("system/algo-2/") for name in names)


def test_samples_wait_for_the_run_to_exist_and_then_go():
    sink = RecordingSink()
    run = {"id": None}
    with SystemMonitor(sink, lambda: run["id"], interval=0.05):
        time.sleep(0.2)
        assert sink.sent == []
        run["id"] = "run-1"
        time.sleep(0.2)
    sent = sink.system()
    assert sent[0][0].step == 0 and "system/cpu_utilization_percentage" in sent[0][0].metrics


def test_a_server_that_hangs_delays_no_sample_and_stopping_does_not_wait_for_it():
    sink = HangingSink()
    monitor = SystemMonitor(sink, lambda: "run-1", interval=0.05)
    monitor.start()
    time.sleep(0.5)  # the sender is inside a send that does not return; the sampler goes on
    assert monitor.waiting >= 5
    started = time.monotonic()
    monitor.stop(wait=0.5)
    assert time.monotonic() - started < 1.5
    sink.release.set()


def test_the_switch_turns_a_trackers_system_metrics_off(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    sink = RecordingSink()
    with Tracker(sink, "exp") as tracker, tracker.monitor_system():
        time.sleep(0.2)
    assert sink.system()
    monkeypatch.setenv(SYSTEM_METRICS_ENV, "false")
    sink = RecordingSink()
    with Tracker(sink, "exp") as tracker, tracker.monitor_system():
        time.sleep(0.2)
    assert sink.sent and not sink.system()


class SystemMetricsAwaySink(RecordingSink):
    """Takes every record but system metrics (as if the server went away whenever they were sent)."""

    def send(self, record, run_id, save):
        if isinstance(record, records.SystemMetrics):
            raise ConnectionError("connection refused")
        return super().send(record, run_id, save)


def test_samples_not_sent_by_the_end_wait_in_the_pending_file_with_the_runs_end(monkeypatch, tmp_path):
    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    monkeypatch.setattr(system_metrics, "STOP_WAIT_SECONDS", 1.0)  # the last try for a server away: 5 s otherwise
    tracker = Tracker(SystemMetricsAwaySink(), "exp", pending_file=tmp_path / "pending.json")
    with tracker.monitor_system():
        time.sleep(0.3)
    assert tracker.end(wait=0) is False
    assert tracker.pending[-1] == "end" and tracker.pending.count("system") >= 3
    saved = json.loads((tmp_path / "pending.json").read_text())["queue"]
    assert saved[0]["op"] == "system" and "system/cpu_utilization_percentage" in saved[0]["metrics"]
