"""Multi-instance data-parallel training (Keras 3 on JAX), proven with real workers on loopback:
the real toolkit, one per host, on 127.0.0.1 and 127.0.0.2, each with its own /opt/ml-like folder,
an N-host resourceconfig.json and the real entry point."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from model_lib import checkpoints
from model_lib.config import TrainConfig
from model_lib.sagemaker.basedir import channel_dir, encode_hyperparameters, host_base_dirs, lay_out, loopback_hosts
from model_lib.sagemaker.local import run_local, start_hosts
from tests.conftest import BIN, REPO, write_prepared

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tiny, so that the three jobs here take about two minutes on two cores: 270 training reviews in 3
# parts (of 100, 100 and 70: the hosts get 2 and 1 of them, ShardedByS3Key), 17 steps an epoch of
# global batch 16, each host feeding the rows it holds (padded to the larger share at weight 0).
# No dropout: which mask falls on which review depends on where the review sits in the global
# batch, and a host holding shards feeds its own rows, not the batch's first half, so with dropout
# the two jobs are different draws of the same training (measured: weights 0.13 apart).
HPS = {
    "epochs": 3, "batch_size": 16, "learning_rate": 0.01, "ngram_buckets": 1009, "patience": 5, "checkpoint_steps": 2,
    "dropout": 0.0,
}  # fmt: skip
# Weights of two hosts differ from one host's only by the order of the gradient sum (measured: 2.4e-7).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("multi") / "prepared", count=400, max_length=30)


def final_weights(base):
    from model_lib.inference import core_model, load_model

    return core_model(load_model(base / "model" / "model.keras")).get_weights()


def largest_difference(a, b) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def one_host(prepared, tmp_path_factory):
    """The same job on one host, one process, on the JAX backend."""
    base = tmp_path_factory.mktemp("one") / "job"
    result = run_local(TrainConfig(**HPS), prepared=prepared["train"].parent, base_dir=base, source_dir=REPO / "entry_point",
                       extra_env={"KERAS_BACKEND": "jax"}, timeout=300)  # fmt: skip
    assert result.exit_code == 0, result.failure
    return final_weights(base)


def assert_disjoint_shares_of_every_part(folders, split):
    """Each host's train channel holds parts no other host holds, and together every part, as the
    channel is ShardedByS3Key in each host's inputdataconfig.json."""
    shares = [{p.read_bytes() for p in channel_dir(folder, "train").rglob("*") if p.is_file()} for folder in folders.values()]
    assert all(shares) and not set.intersection(*shares)
    assert set.union(*shares) == {p.read_bytes() for p in split.iterdir()} and len(set.union(*shares)) == 3
    for folder in folders.values():
        config = json.loads((folder / "input" / "config" / "inputdataconfig.json").read_text())
        distribution = {name: config[name]["S3DistributionType"] for name in ("train", "test")}
        assert distribution == {"train": "ShardedByS3Key", "test": "FullyReplicated"}


def model_lib_local(base, prepared, *extra, env=None):
    params = base.parent / "params.yaml"
    params.write_text(json.dumps({"train": HPS}), encoding="utf-8")  # JSON is YAML
    command = [str(BIN / "model-lib"), "sagemaker-local", "--params", str(params), "--prepared", str(prepared["train"].parent),
               "--source-dir", str(REPO / "entry_point"), "--base-dir", str(base), "--instance-count", "2", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_a_killed_worker_fails_the_job_with_the_reason_within_seconds_and_a_restart_resumes(
    prepared, one_host, tmp_path, mlflow_server
):
    """One test for both behaviours (each two-host job costs about a minute on two cores): the kill,
    then the restart, which is also the check of a two-host job that runs to the end, tracked in
    MLflow with each host's system metrics."""
    base = tmp_path / "job"
    hosts = loopback_hosts(2)
    folders = host_base_dirs(base, hosts)
    for host, folder in folders.items():
        lay_out(folder, encode_hyperparameters(HPS), prepared, REPO / "entry_point", hosts=hosts, current_host=host)
    assert_disjoint_shares_of_every_part(folders, prepared["train"])
    experiment = f"multi-{tmp_path.name}"  # the run the killed job opens, and its restart reopens
    tracking = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": experiment}
    tracking["MODEL_LIB_SYSTEM_METRICS_SECONDS"] = "1"
    coordinator, worker = start_hosts(folders, {"MODEL_LIB_HEARTBEAT_SECONDS": "10", **tracking})
    deadline = time.monotonic() + 240
    while not checkpoints.generation_numbers(base / "checkpoints"):
        assert coordinator.poll() is None and time.monotonic() < deadline, "no checkpoint before the job ended"
        time.sleep(0.01)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker host dies: its toolkit and training script
    killed = time.monotonic()
    assert coordinator.wait(timeout=120) != 0
    detected = time.monotonic() - killed
    print(f"coordinator failed {detected:.1f} s after the worker was killed")
    assert detected < 30
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("ClusterError: host 127.0.0.1 (process 0 of 2) lost the other hosts"), failure[:500]
    newest = checkpoints.latest(base / "checkpoints")
    assert newest is not None and (newest.state["epoch"], newest.state["step"]) < (HPS["epochs"], 0)

    restarted = model_lib_local(base, prepared, "--keep", env=tracking)
    output = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, output[-3000:]
    assert f"resuming at epoch {newest.state['epoch'] + 1}, step {newest.state['step']}" in output
    assert output.count("training finished") == 2  # both hosts

    worker = base / "hosts" / "127.0.0.2"
    assert (worker / "output" / "success").is_file()
    assert {p.name for p in (base / "model").iterdir()} == {"model.keras", "metrics.json", "vocab.txt"}
    assert (base / "output" / "data" / "metrics.json").is_file()
    assert not any((worker / "model").iterdir()) and not any((worker / "output" / "data").iterdir())
    assert not any((worker / "checkpoints").iterdir()), "only the coordinator writes checkpoints"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    system = {name for name in run.data.metrics if name.startswith("system/")}
    for host in hosts:  # each host its own series, the worker's too
        assert {f"system/{host}/cpu_utilization_percentage", f"system/{host}/system_memory_usage_megabytes"} <= system, system
    assert not {"system/cpu_utilization_percentage"} & system

    difference = largest_difference(final_weights(base), one_host)
    print(f"largest weight difference, 2 hosts (killed, resumed) vs 1: {difference:.3g}")
    assert difference < TOLERANCE

    # The JAX-trained weights in the TensorFlow-backend raw-string model score the test split as
    # the coordinator (on JAX) scored it.
    from model_lib.evaluation import evaluate
    from model_lib.inference import load_model, predict_encoded
    from model_lib.prepared import load_split

    test = load_split(prepared["test"])
    scored = evaluate(test.labels, predict_encoded(load_model(base / "model" / "model.keras"), test))
    written = json.loads((base / "model" / "metrics.json").read_text())["test"]
    assert scored["accuracy"] == written["accuracy"] and abs(scored["roc_auc"] - written["roc_auc"]) < 1e-6
