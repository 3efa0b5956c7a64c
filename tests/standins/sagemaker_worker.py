"""SageMaker's workers, stood in for: a thread that runs each training job that appears in moto, as
SageMaker would, with `model-lib sagemaker-local --job NAME` (the real toolkit, the job's S3 channels
and code), publishing the job's output to CloudWatch Logs as it goes and setting how the job ended
(its exit code, its failure file) on the fake SageMaker (tests/standins/fake_sagemaker.py).

The jobs run are the ``model-lib-train-*`` jobs and the trials of tuning jobs created while the fake is
installed. Jobs run side by side, each in a thread of its own, as SageMaker runs each job on its own
instances. As SageMaker, the worker stops a job it runs when StopTrainingJob is asked for it (SIGTERM
to its run, unless a behaviour runs beside it: that behaviour decides), and restarts a reclaimed spot
job when told to (:class:`SageMakerWorker`). :func:`remote_repo` lays out the repo copy, the AWS
resources and the MLflow server they work with.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model_lib.sagemaker.jobs import LOG_GROUP
from tests.conftest import free_port, git_copy_of_repo, start_mlflow_server, stop_server
from tests.conftest import run_checked as run
from tests.standins.fake_sagemaker import FakeSageMaker, status_for_exit

# What a job's behaviour gets (its name, its first running `sagemaker-local` and that run's base dir)
# and returns: how it ends instead (FakeSageMaker.end's arguments), {} to end as its exit code says.
Behaviour = Callable[[str, subprocess.Popen, Path], dict]
RECLAIMED = 128 + signal.SIGTERM  # the exit code of a run stopped by SIGTERM, as a spot reclaim stops it
WAITING = ("InProgress", "Stopping")  # the statuses of a job not ended yet: one to run
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


class SageMakerWorker(threading.Thread):
    """Runs each training job that appears in moto (created since the worker was, not ended yet) once, in
    a thread of its own; ``paused`` holds new jobs. ``started`` lists the jobs in the order they were
    taken; ``times`` gives each one's (start, end) in ``time.time()`` seconds, the end once its last
    process has exited; ``behaviours`` maps a job-name suffix to a :data:`Behaviour` run beside that
    job's first run.

    ``restart_reclaimed`` is a predicate of the job name (default: none): a spot job
    (EnableManagedSpotTraining) it is true of, whose first run exits 143 (SIGTERM: a spot reclaim, e.g.
    sent by its behaviour) with no stop asked for it and no ending set by its behaviour, is run again,
    as SageMaker restarts a reclaimed spot job: the same `sagemaker-local --job NAME` in a new base dir
    (a new instance: its checkpoints come back from the job's S3 URI), its lines in the same log stream;
    the job ends as that second run does, ``seconds`` counting both. ``restarted`` lists the jobs run
    again. A trial's name ends in a random ``-<8 hex>``: a suffix of ``behaviours`` also matches the
    name without it, so ``-002`` (or ``-002-``) is the second trial of any tuning job."""

    def __init__(self, repo: Path, env: dict[str, str], session: Any, fake: FakeSageMaker) -> None:
        super().__init__(daemon=True)
        self.repo, self.env, self.session, self.fake = repo, env, session, fake
        self.sagemaker = session.client("sagemaker", endpoint_url=env["AWS_ENDPOINT_URL"])
        self.logs = session.client("logs", endpoint_url=env["AWS_ENDPOINT_URL"])
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):  # moto is shared
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        self.started: list[str] = []
        self.times: dict[str, tuple[float, float | None]] = {}
        self.running: list[threading.Thread] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.restart_reclaimed: Callable[[str], bool] = lambda _name: False
        self.restarted: list[str] = []
        self.paused = threading.Event()
        self.stopping = threading.Event()
        now = datetime.datetime.now(datetime.UTC)
        self.since = now.replace(microsecond=now.microsecond // 1000 * 1000)  # moto's CreationTime has ms

    def run(self) -> None:
        while not self.stopping.is_set():
            for summary in self.sagemaker.list_training_jobs()["TrainingJobSummaries"]:
                name = summary["TrainingJobName"]
                # moto lives for the whole session: only the jobs created while this module's fake is
                # installed are ours (another module's stage jobs have the same name prefix).
                ours = name in self.fake.jobs and (name.startswith("model-lib-train-") or name in self.fake.trials)
                waiting = summary["TrainingJobStatus"] in WAITING and summary["CreationTime"] >= self.since
                if ours and waiting and name not in self.started and not self.paused.is_set():
                    self.started.append(name)
                    thread = threading.Thread(target=self.execute, args=(name,), daemon=True)
                    self.running.append(thread)
                    thread.start()
            time.sleep(0.3)
        for thread in self.running:
            thread.join(timeout=600)  # while the fake is still installed for their ends

    def matches(self, name: str, suffix: str) -> bool:
        """Return whether job ``name`` ends with ``suffix`` (a trial's also without its ``<8 hex>``, or ``-<8 hex>``)."""
        names = (name, name[:-8], name[:-9]) if name in self.fake.trials else (name,)
        return any(stem.endswith(suffix) for stem in names)

    def execute(self, name: str) -> None:
        self.times[name] = (time.time(), None)
        stream = f"{name}/algo-1-{int(time.time())}"
        logs = self.session.client("logs", endpoint_url=self.env["AWS_ENDPOINT_URL"])  # clients are per thread
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        behaviour = next((b for suffix, b in self.behaviours.items() if self.matches(name, suffix)), None)
        started = time.monotonic()
        base_dir = self.repo.parent / f"worker-{name}"

        def publish(line: str) -> None:
            event = {"timestamp": int(time.time() * 1000), "message": line.rstrip()[:1000]}
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[event])

        code, ending = self.run_job(name, base_dir, publish, behaviour)
        if self.reclaimed(name, code, ending):  # SageMaker runs it again on a new instance
            self.restarted.append(name)
            base_dir = self.repo.parent / f"worker-{name}-restarted"
            code, ending = self.run_job(name, base_dir, publish, None)
        self.times[name] = (self.times[name][0], time.time())
        failure_file = base_dir / "output" / "failure"
        failure = failure_file.read_text(encoding="utf-8") if failure_file.is_file() else None
        end = {"status": status_for_exit(code), "exit_code": code, "seconds": time.monotonic() - started, "failure": failure}
        end.update(ending)
        self.fake.end(name, end.pop("status"), **end)

    def run_job(self, name: str, base_dir: Path, publish: Callable[[str], None], behaviour: Behaviour | None) -> tuple[int, dict]:
        """Run `model-lib sagemaker-local --job NAME` in ``base_dir`` to its exit, each line of its output
        to ``publish``, ``behaviour`` beside it (else a stop asked for the job sends it SIGTERM); return
        its exit code and the ending the behaviour set."""
        command = ["model-lib", "sagemaker-local", "--job", name, "--base-dir", str(base_dir)]
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        process = subprocess.Popen(command, cwd=self.repo, env=self.env, **output)
        assert process.stdout is not None
        ending: dict = {}
        if behaviour is not None:
            beside = threading.Thread(target=lambda: ending.update(behaviour(name, process, base_dir)), daemon=True)
        else:
            beside = threading.Thread(target=self.stop_when_asked, args=(name, process), daemon=True)
        beside.start()
        for line in process.stdout:
            if line.strip():
                publish(line)
        code = process.wait()
        beside.join()
        return code, ending

    def stop_when_asked(self, name: str, process: subprocess.Popen) -> None:
        """Send ``process`` SIGTERM once StopTrainingJob has been asked for job ``name``, as SageMaker stops a job."""
        while process.poll() is None:
            if name in self.fake.stop_requests:
                process.send_signal(signal.SIGTERM)
                return
            time.sleep(0.1)

    def reclaimed(self, name: str, code: int, ending: dict) -> bool:
        """Return whether job ``name``'s first run, which exited ``code`` (its behaviour set ``ending``), was
        a spot reclaim to restart (see :class:`SageMakerWorker`)."""
        if code != RECLAIMED or "status" in ending or name in self.fake.stop_requests:
            return False
        return bool(self.fake.jobs[name].enable_managed_spot_training) and self.restart_reclaimed(name)


def aws_account(moto_server: str, bucket: str) -> tuple[Any, dict[str, Any], str, str]:
    """Make, on moto, what terraform/ makes: the bucket, a SageMaker role and an ECR repository
    (``train-<bucket>``); return the boto3 session, its s3/ecr/iam clients, the role ARN and the repository URI."""
    import boto3

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    clients = {name: session.client(name, endpoint_url=moto_server) for name in ("s3", "ecr", "iam")}
    clients["s3"].create_bucket(Bucket=bucket)
    role = clients["iam"].create_role(RoleName=f"sm-{bucket}", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    ecr = clients["ecr"].create_repository(repositoryName=f"train-{bucket}")["repository"]["repositoryUri"]
    return session, clients, role, ecr


@contextlib.contextmanager
def remote_repo(
    folder: Path, params: dict[str, dict[str, Any]], moto_server: str, fake: FakeSageMaker
) -> Iterator[dict[str, Any]]:
    """Yield a repo copy in ``folder`` (``params`` in params.yaml) with an S3 DVC remote, image and role
    in moto, a real MLflow server of its own (no experiment yet) and a running :class:`SageMakerWorker`:
    a dict of repo, env (with the train stage switched to SageMaker), bucket, s3, worker, uri, fake,
    session (boto3) and repository (the ECR repository: a new commit needs its image tag there)."""

    copy = folder / "repo"
    copy.mkdir()
    env = git_copy_of_repo(copy, params)
    bucket = f"remote-{folder.name.lower().replace('_', '-')[-20:]}"
    session, clients, role, ecr = aws_account(moto_server, bucket)
    outputs = {"ecr_repository_url": ecr, "sagemaker_role_arn": role, "bucket_name": bucket}
    (copy / "tf-outputs.json").write_text(json.dumps({k: {"value": v} for k, v in outputs.items()}))
    (copy / ".gitignore").write_text((copy / ".gitignore").read_text() + "/tf-outputs.json\n")
    aws = {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.update(aws, AWS_DEFAULT_REGION="us-east-1", HOME=str(copy))
    env.pop("AWS_PROFILE", None)
    run(["dvc", "remote", "add", "s3", f"s3://{bucket}/dvc"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "s3 remote"], copy, env)
    commit = run(["git", "rev-parse", "--short=7", "HEAD"], copy, env).stdout.strip()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    clients["ecr"].put_image(repositoryName=f"train-{bucket}", imageManifest=manifest, imageTag=f"cpu-{commit}")

    port = free_port()
    root = folder / "mlflow"
    root.mkdir()
    server = start_mlflow_server(root, port)
    uri = f"http://127.0.0.1:{port}"
    env["MLFLOW_TRACKING_URI"] = uri
    worker = SageMakerWorker(copy, dict(env), session, fake)
    worker.start()
    stage_env = {
        **env,
        "MODEL_LIB_TRAIN_ON": "sagemaker",
        "MODEL_LIB_LAUNCH_OPTIONS": "--terraform-outputs tf-outputs.json --allow-local-tracking --max-run 1800",
        "MODEL_LIB_POLL_SECONDS": "1",
    }
    try:
        yield {
            "repo": copy,
            "env": stage_env,
            "bucket": bucket,
            "s3": clients["s3"],
            "worker": worker,
            "uri": uri,
            "fake": fake,
            "session": session,
            "repository": f"train-{bucket}",
        }
    finally:
        worker.stopping.set()
        worker.join(timeout=900)
        stop_server(server)
