"""This host's system metrics in the run: CPU, memory, disk, network and GPU use, sampled every
``MODEL_LIB_SYSTEM_METRICS_SECONDS`` (default 10 s) while training runs, named ``system/<metric>``
(MLflow's own names), or ``system/<host>/<metric>`` on a multi-host job (each host its own series).
``MODEL_LIB_SYSTEM_METRICS=false`` turns them off.

The samples come from MLflow's own collectors (``mlflow.system_metrics.metrics``: psutil, and
pynvml from ``nvidia-ml-py`` where there is an NVIDIA GPU), but not through MLflow's
``SystemMetricsMonitor``, which does not keep to "tracking never stops training": its thread asks
the server for the run before every sample and stops for good at the first failure, its
``finish()`` joins that thread and flushes with no time bound (an outage holds the exit for
MLflow's retries), and resuming reads the run from the server in its constructor. Here a thread of
ours samples, and a second sends each sample as a :class:`~model_lib.tracking.records.SystemMetrics`
record through a queue of its own (in memory), with the same back-off as the run's own records; the
training thread never waits on it, and stopping waits a few seconds at most. What was not sent by
then (the last hour's samples at most) joins the run's own queue before the run's end, so it waits
in the pending file with the rest (a worker host, which has no run of its own, drops it).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from model_lib.tracking import records
from model_lib.tracking.queue import PendingQueue, Sink

logger = logging.getLogger(__name__)

SYSTEM_METRICS_ENV = "MODEL_LIB_SYSTEM_METRICS"
INTERVAL_ENV = "MODEL_LIB_SYSTEM_METRICS_SECONDS"
DEFAULT_INTERVAL_SECONDS = 10.0  # MLflow's own default sampling interval
PREFIX = "system/"  # MLflow's: the run page shows these in its System metrics section
# Samples kept while the server does not answer (a day at 10 s); older ones are dropped.
MAX_WAITING_SAMPLES = 8640
# Samples handed to the run's own queue at the end (an hour at 10 s; the pending file stays small).
MAX_HANDED_OVER = 360
# How long stopping waits for the last samples to be sent, at most (a stopped job: less).
STOP_WAIT_SECONDS = 5.0
STOPPED_WAIT_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class SystemMetricsSettings:
    """Whether system metrics are sampled, and every how many seconds."""

    enabled: bool = True
    interval: float = DEFAULT_INTERVAL_SECONDS


def settings(environ: Mapping[str, str] | None = None) -> SystemMetricsSettings:
    """Return the settings in MODEL_LIB_SYSTEM_METRICS and MODEL_LIB_SYSTEM_METRICS_SECONDS.

    Raises:
        ConfigError: naming the variable, for a switch that is not true/false or an interval that
            is not a number of seconds > 0.
    """
    from model_lib.environ import flag_from_env, seconds_from_env

    return SystemMetricsSettings(
        enabled=flag_from_env(SYSTEM_METRICS_ENV, True, environ=environ),
        interval=seconds_from_env(INTERVAL_ENV, DEFAULT_INTERVAL_SECONDS, positive=True, environ=environ),
    )


def collectors() -> list[Any]:
    """Return MLflow's collectors for this host: CPU and memory, disk, network, and the NVIDIA GPUs
    when pynvml finds any (none is an error: GPU metrics are left out)."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    found: list[Any] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        found.append(GPUMonitor())
    except Exception as exc:  # no nvidia-ml-py, no driver, no GPU
        logger.debug("no GPU metrics: %s", exc)
    return found


class SystemMonitor:
    """Samples this host's system metrics every ``interval`` seconds into the run ``run_id()`` names
    (None: not created yet; the samples wait), through ``sink``, in a daemon thread; as a context
    manager it runs while the context is open. ``node`` (a host name) names a multi-host job's series.
    """

    def __init__(
        self,
        sink: Sink,
        run_id: Callable[[], str | None],
        *,
        node: str | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        target: str = "the tracking server",
        hand_over: Callable[[list[records.SystemMetrics]], None] | None = None,
    ) -> None:
        self.prefix = PREFIX + (f"{node}/" if node else "")
        self.interval = interval
        self._run_id = run_id
        self._hand_over = hand_over
        self._queue = PendingQueue(sink, None, target=f"{target} (system metrics)")  # the sender's alone
        self._taken: collections.deque[records.SystemMetrics] = collections.deque(maxlen=MAX_WAITING_SAMPLES)
        self._stopping = threading.Event()  # set by stop(): the sampler takes its last sample
        self._sampled = threading.Event()  # set by the sampler after each sample: the sender wakes
        self._done = threading.Event()  # set by the sampler after its last sample
        self._threads: list[threading.Thread] = []
        self._collectors: list[Any] = []
        self._step = 0
        self._final_wait = 0.0

    def __enter__(self) -> SystemMonitor:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # A stopped job (SIGTERM: seconds before the kill) does not wait for its last samples.
        left = self.stop(STOP_WAIT_SECONDS if exc_type is None else STOPPED_WAIT_SECONDS)
        if left and self._hand_over is not None:
            self._hand_over(left)
        elif left:
            logger.info("system metrics: %d samples not sent", len(left))

    def start(self) -> None:
        """Start sampling, and sending in a second thread (a send that hangs delays no sample); a
        failure to start is logged: training goes on without system metrics."""
        try:
            self._collectors = collectors()
            self._collect()  # CPU use is measured between two calls: this one is the first
            for collector in self._collectors:
                collector.clear_metrics()
            self._threads = [
                threading.Thread(target=loop, name=f"model-lib-system-metrics-{name}", daemon=True)
                for name, loop in (("sampler", self._sample_loop), ("sender", self._send_loop))
            ]
            for thread in self._threads:
                thread.start()
        except Exception as exc:
            logger.warning("system metrics are not recorded: %s: %s", type(exc).__name__, exc)
            self._threads = []

    def stop(self, wait: float = STOP_WAIT_SECONDS) -> list[records.SystemMetrics]:
        """Take a last sample and send what waits, for up to ``wait`` seconds, then leave the threads
        (daemons: they never hold the process's exit); return the samples not sent (the newest
        :data:`MAX_HANDED_OVER`), which this monitor no longer sends."""
        if not self._threads:
            return []
        self._final_wait = max(0.0, wait - 1.0)
        self._stopping.set()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []
        left = [record for record in [*self._queue.records, *self._taken] if isinstance(record, records.SystemMetrics)]
        self._queue.records.clear()  # a sender still inside a send that hangs sends nothing after it
        self._taken.clear()
        return left[-MAX_HANDED_OVER:]

    @property
    def waiting(self) -> int:
        """Return how many samples wait to be sent."""
        return len(self._taken) + len(self._queue.records)

    def _sample_loop(self) -> None:
        while not self._stopping.wait(self.interval):
            self._sample()
        self._sample()
        self._done.set()
        self._sampled.set()

    def _sample(self) -> None:
        try:
            self._collect()
            self._taken.append(records.SystemMetrics(self._aggregate(), self._step, int(time.time() * 1000)))
            self._step += 1
        except Exception as exc:  # never a reason for anything to stop; the next sample tries again
            logger.debug("system metrics sample failed: %s: %s", type(exc).__name__, exc)
        self._sampled.set()

    def _send_loop(self) -> None:
        while not self._done.is_set():
            self._sampled.wait()
            self._sampled.clear()
            self._send(0.0)
        self._send(self._final_wait)  # the last: tried even during a back-off

    def _send(self, wait: float) -> None:
        try:
            while self._taken:
                self._queue.records.append(self._taken.popleft())  # in memory only: nothing to save
            del self._queue.records[:-MAX_WAITING_SAMPLES]
            if self._queue.run_id is None:
                self._queue.run_id = self._run_id()
            if self._queue.run_id is not None:
                self._queue.flush(wait)
        except Exception as exc:  # never a reason for anything to stop; the next sample tries again
            logger.debug("system metrics not sent: %s: %s", type(exc).__name__, exc)

    def _collect(self) -> None:
        for collector in self._collectors:
            collector.collect_metrics()

    def _aggregate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for collector in self._collectors:
            metrics.update({self.prefix + k: float(v) for k, v in collector.aggregate_metrics().items()})
            collector.clear_metrics()
        return metrics
