"""Many experiments at once: DVC's queue (`dvc exp run --queue`, then `--run-all --jobs 4`) with the
train stage on SageMaker runs one SageMaker job per experiment, side by side, each with its own MLflow
run, all of them one sweep, each priced, one failing alone with SageMaker's reason.

The cloud is moto with the fake SageMaker and a worker running each job in a thread of its own
(tests/standins/sagemaker_worker.py); MLflow is a real server started empty (no experiment yet), so
the first runs of the queue race to create its experiment; DVC is the real `dvc` and its celery queue.
"""

import itertools
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run_checked as run
from tests.standins.sagemaker_worker import remote_repo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {"ingest": {"limit": 400}, "prepare": {"vocab_size": 3000}}
TRAIN = {"epochs": 2, "patience": 5, "ngram_buckets": 100003, "batch_size": 16}
PAGE = 4096
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})


class FollowerProbe(threading.Thread):
    """Samples every `model-lib train` process working under ``root`` (the stage following its job; not
    the local trainings of tests running beside it): the most resident memory each reached, its CPU
    seconds, and whether it ever mapped TensorFlow's library."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = str(root.resolve())
        self.rss: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.tensorflow: set[int] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    self.sample(proc)
            time.sleep(0.5)

    def sample(self, proc: Path) -> None:
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(arg.endswith(b"/model-lib") and following == b"train" for arg, following in itertools.pairwise(command)):
                return
            if not os.readlink(proc / "cwd").startswith(self.root):
                return
            pid = int(proc.name)
            self.rss[pid] = max(self.rss.get(pid, 0), int((proc / "statm").read_text().split()[1]) * PAGE)
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks
            if "libtensorflow" in (proc / "maps").read_text():
                self.tensorflow.add(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
            pass  # the process ended between listing and reading


@pytest.fixture(scope="module")
def queue(moto_server, fake_sagemaker, tmp_path_factory):
    with remote_repo(tmp_path_factory.mktemp("queue"), {**SMALL, "train": TRAIN}, moto_server, fake_sagemaker) as found:
        repo, env = found["repo"], found["env"]
        run(["dvc", "repro", "prepare"], repo, env)  # the baseline's data: each experiment checks it out
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "prepared"], repo, env)
        commit = run(["git", "rev-parse", "--short=7", "HEAD"], repo, env).stdout.strip()
        ecr = found["session"].client("ecr", endpoint_url=moto_server)
        ecr.put_image(repositoryName=found["repository"], imageManifest=MANIFEST, imageTag=f"cpu-{commit}")  # make docker-push
        yield found


def experiment_rows(shown: list[dict]) -> list[dict]:
    """Return each experiment's revision of `dvc exp show --json`: its name, params, metrics, error."""
    return [rev for baseline in shown for exp in (baseline.get("experiments") or []) for rev in exp.get("revs", [])]


def test_four_queued_experiments_run_as_four_overlapping_jobs_each_tracked_and_priced(queue):
    import mlflow

    repo, env, worker = queue["repo"], queue["env"], queue["worker"]
    # Relative launch options as in the repo: the queued workspaces lack the git-ignored tf-outputs.json.
    assert "--terraform-outputs tf-outputs.json" in env["MODEL_LIB_LAUNCH_OPTIONS"]
    run(["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=0.003,0.01"], repo, env)  # DVC's grid: two
    run(["dvc", "exp", "run", "--queue", "-S", "train.epochs=1", "-n", "one-epoch"], repo, env)
    run(["dvc", "exp", "run", "--queue", "-S", "train.batch_size=32", "-n", "batch-32"], repo, env)
    run(["dvc", "exp", "run", "--queue", "-S", "train.validation_split=0.999", "-n", "doomed"], repo, env)  # last

    probe = FollowerProbe(repo)
    probe.start()
    started = time.monotonic()
    try:
        # Its exit status is 0 even when an experiment failed (DVC 3.67): what it printed tells.
        command = ["dvc", "exp", "run", "--run-all", "--jobs", "4"]
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        probe.stopping.set()
        probe.join()
    wall = time.monotonic() - started
    print(f"4+1 queued experiments, --jobs 4: {wall:.0f} s wall")

    jobs = list(worker.started)
    assert len(jobs) == 5, (jobs, result.stdout[-3000:], result.stderr[-3000:])
    client = worker.sagemaker
    described = {name: client.describe_training_job(TrainingJobName=name) for name in jobs}
    completed = [name for name, d in described.items() if d["TrainingJobStatus"] == "Completed"]
    failed = [name for name, d in described.items() if d["TrainingJobStatus"] == "Failed"]
    assert len(completed) == 4 and len(failed) == 1, {n: d["TrainingJobStatus"] for n, d in described.items()}
    times = [worker.times[name] for name in completed]
    assert max(start for start, _ in times) < min(end for _, end in times if end is not None), times  # side by side

    # The failing one fails alone, with SageMaker's reason in DVC's log of it.
    assert "doomed" in result.stderr + result.stdout
    logs = run(["dvc", "queue", "logs", "doomed"], repo, env)
    assert "too few for validation_split=0.999" in logs.stdout
    assert described[failed[0]]["FailureReason"] in logs.stdout.replace("\n", " ") or "Failed:" in logs.stdout

    # DVC 3.67 lists a failed queued experiment with the metrics of the commit it was queued from (the
    # baseline's: collect_failed_data reads its stash commit), flagged as failed; --hide-failed leaves it out.
    listed = experiment_rows(json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout))
    assert [row["error"]["msg"] for row in listed if row.get("name") == "doomed"] == ["Experiment run failed"]
    shown = json.loads(run(["dvc", "exp", "show", "--json", "--hide-failed"], repo, env).stdout)
    assert "doomed" not in {row.get("name") for row in experiment_rows(shown)}
    rows = [row for row in experiment_rows(shown) if row.get("data", {}).get("metrics")]
    done = []
    for row in rows:
        data = row["data"]
        metrics = {path: value.get("data", {}) for path, value in data["metrics"].items()}
        params = data["params"]["params.yaml"]["data"]["train"]
        if "accuracy" in metrics.get("reports/metrics.json", {}) and "cost_usd" in metrics.get("models/cost.json", {}):
            done.append((row.get("name"), params, metrics))
    assert len(done) == 4, json.dumps(shown)[:4000]
    assert sorted(str(p.get("learning_rate")) for _, p, _ in done).count("0.003") == 1
    assert {name for name, _, _ in done} >= {"one-epoch", "batch-32"}
    for _, _, metrics in done:
        cost = metrics["models/cost.json"]
        assert cost["cost_usd"] >= 0 and cost["trained_on"] == "sagemaker" and "table as of" in cost["price_source"]

    # One MLflow run per experiment, all of them one sweep (a tag the UI filters on), each priced.
    mlflow_client = mlflow.MlflowClient(tracking_uri=queue["uri"])
    experiments = mlflow_client.search_experiments()
    runs = [r for e in experiments for r in mlflow_client.search_runs([e.experiment_id], "tags.sweep LIKE 'dvc-exp-%'")]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 4, [(r.info.status, r.data.tags.get("sagemaker.job_name")) for r in runs]
    assert len({r.data.tags["sweep"] for r in finished}) == 1
    assert {r.data.tags["sagemaker.job_name"] for r in finished} == set(completed)  # no job without its run
    assert len({r.data.tags["dvc_experiment"] for r in finished}) == 4
    assert all("cost_usd" in r.data.metrics and "test_accuracy" in r.data.metrics for r in finished)

    # Each follower followed: it never loaded TensorFlow, and it stayed small.
    followers = [pid for pid in probe.rss if pid not in probe.tensorflow]
    print(f"followers: {len(probe.rss)}, most RSS {max(probe.rss.values()) / 2**20:.0f} MiB, "
          f"CPU s each {sorted(round(c, 1) for c in probe.cpu.values())}")  # fmt: skip
    assert probe.rss and not probe.tensorflow, (probe.rss, probe.tensorflow)
    assert max(probe.rss[pid] for pid in followers) < 400 * 2**20

    # Nothing is left to launch: a second start of the queue sends no job. Its output goes to a file: the
    # worker it starts can stay idle holding its stdout (seen once in CI), so a pipe would never close.
    again_log = repo.parent / "run-all-again.log"
    with again_log.open("w") as log:
        command = ["dvc", "exp", "run", "--run-all", "--jobs", "4"]
        again = subprocess.run(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert again.returncode == 0, again_log.read_text()[-3000:]
    time.sleep(2)
    assert worker.started == jobs
    subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def new_jobs(worker, known: set[str]) -> list[str]:
    """Return the training jobs moto holds that are in no earlier list of this module."""
    names = [s["TrainingJobName"] for s in worker.sagemaker.list_training_jobs()["TrainingJobSummaries"]]
    return [name for name in names if name.startswith("model-lib-train-") and name not in known]


def test_dvc_queue_kill_stops_the_follower_not_the_job_and_the_experiment_run_again_re_attaches(queue):
    repo, env, worker, fake = queue["repo"], queue["env"], queue["worker"], queue["fake"]
    known = set(new_jobs(worker, set()))
    worker.paused.set()  # SageMaker has not started it yet: the job stays InProgress while its follower is killed
    run(["dvc", "exp", "run", "--queue", "-S", "train.epochs=3", "-n", "killed"], repo, env)
    # `dvc queue start` would do, but its workers keep its output open: a test could not read it to the end.
    with (repo.parent / "run-all.log").open("w") as log:
        following = subprocess.Popen(["dvc", "exp", "run", "--run-all"], cwd=repo, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not (launched := new_jobs(worker, known)):
            assert time.monotonic() < deadline and following.poll() is None, (repo.parent / "run-all.log").read_text()
            time.sleep(1)
        job = launched[0]
        run(["dvc", "queue", "kill", "killed"], repo, env)  # SIGINT to the experiment's processes, as Ctrl-C
        following.wait(timeout=120)
    finally:
        if following.poll() is None:
            following.kill()
    assert job not in fake.stop_requests
    assert worker.sagemaker.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "InProgress"
    assert "it keeps running" in run(["dvc", "queue", "logs", "killed"], repo, env).stdout

    worker.paused.clear()
    again = run(["dvc", "exp", "run", "-S", "train.epochs=3"], repo, env)  # the same experiment, run again
    assert f"SageMaker job {job} already trains these inputs (InProgress): re-attaching" in again.stdout
    assert "Completed / Completed" in again.stdout
    assert new_jobs(worker, known) == [job] and worker.started.count(job) == 1  # launched once
