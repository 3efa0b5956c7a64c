"""Shared fixtures: tiny data made in the test, and real servers on 127.0.0.1 stopped by PID."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from tests.standins.fake_sagemaker import FakeSageMaker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Tiers by cost, opt-in (keras-hub's --run_large): plain `pytest` is the fast tier; `make test` (tox)
# adds the others. A marker names a tier; the option that brings it in is beside it.
TIERS = {"slow": "--run-slow", "integration": "--run-integration"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tiers", "test tiers by cost (plain pytest runs only the fast one)")
    group.addoption("--run-slow", action="store_true", help="also run tests marked slow: real trainings, CLI processes")
    group.addoption("--run-integration", action="store_true", help="also run tests marked integration: servers, toolkit, dvc")


def pytest_report_header(config: pytest.Config) -> str:
    off = [f"{marker} ({option})" for marker, option in TIERS.items() if not config.getoption(option)]
    return "tiers left out: " + ", ".join(off) if off else "tiers: all"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    off = {marker for marker, option in TIERS.items() if not config.getoption(option)}
    kept, left_out = [], []
    for item in items:
        (left_out if off & {mark.name for mark in item.iter_markers()} else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


POSITIVE = [
    "a wonderful , moving film",
    "great acting and a great story",
    "i loved it , truly brilliant",
    "superb direction , beautiful music",
    "funny , warm and wonderful",
]
NEGATIVE = [
    "a dull , boring film",
    "terrible acting and a bad story",
    "i hated it , truly awful",
    "poor direction , annoying music",
    "boring , slow and bad",
]


def review_rows(count: int = 200) -> list[tuple[str, int]]:
    """Return ``count`` short reviews alternating positive and negative, each a little different."""
    rows = []
    for i in range(count):
        label = i % 2
        base = (POSITIVE if label else NEGATIVE)[(i // 2) % 5]
        rows.append((f"{base} <br /><br />number {i} .", label))
    return rows


@pytest.fixture
def tiny_reviews(tmp_path: Path) -> Path:
    """A 200-review CSV (text,label) with <br /> tags."""
    import csv

    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(review_rows())
    return path


GLOVE_WORDS = {
    "the": [0.1, 0.2, 0.3],
    "#hashtag": [0.5, 0.5, 0.5],
    "nan": [1.0, 2.0, 3.0],
    "null": [-1.0, 0.0, 1.0],
    "good": [0.9, 0.1, 0.0],
    "bad": [-0.9, -0.1, 0.0],
    "n't": [0.0, -0.5, 0.2],
    '"': [0.3, 0.3, -0.3],
}


def glove_text(words: dict[str, list[float]] = GLOVE_WORDS) -> str:
    return "".join(f"{w} {' '.join(str(v) for v in vec)}\n" for w, vec in words.items())


@pytest.fixture
def tiny_glove(tmp_path: Path) -> Path:
    """A 3-dimensional GloVe text file whose words include '#hashtag', 'nan', 'null' and '"'."""
    path = tmp_path / "glove.6B.3d.txt"
    path.write_text(glove_text(), encoding="utf-8")
    return path


def make_aclimdb_tarball(path: Path, per_class: int = 3, extra: dict[str, bytes] | None = None) -> Path:
    """Write a mini aclImdb_v1.tar.gz: train/test x pos/neg, an unsup review, and a README."""
    with tarfile.open(path, "w:gz") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"mini")
        for split in ("train", "test"):
            for label, words in (("pos", "great wonderful"), ("neg", "awful boring")):
                for i in range(per_class):
                    add(
                        f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt",
                        f"{split} {words} review {i}<br />end".encode(),
                    )
        add("aclImdb/train/unsup/0_0.txt", b"unlabelled")
        for name, data in (extra or {}).items():
            add(name, data)
    return path


@pytest.fixture
def aclimdb_tarball(tmp_path: Path) -> Path:
    return make_aclimdb_tarball(tmp_path / "aclImdb_v1.tar.gz")


def write_prepared(folder: Path, count: int = 240, max_length: int = 40, seed: int = 0) -> dict[str, Path]:
    """Write the four prepare outputs for a tiny separable data set; return them by channel name."""
    from model_lib.embeddings import Glove, embedding_matrix
    from model_lib.prepared import save_split
    from model_lib.text import Vocabulary

    rows = review_rows(count)
    texts, labels = [t for t, _ in rows], np.asarray([label for _, label in rows], dtype=np.int8)
    vocabulary = Vocabulary.fit(texts[: count * 3 // 4], max_size=200, min_count=1)
    rng = np.random.default_rng(seed)
    glove = Glove(vocabulary.tokens[:10], rng.normal(size=(10, 8)).astype(np.float32))
    ids = vocabulary.encode(texts, max_length)
    folder.mkdir(parents=True, exist_ok=True)
    cut = count * 3 // 4
    save_split(folder / "train", ids[:cut], labels[:cut], vocabulary=vocabulary, shard_reviews=100)
    save_split(folder / "test", ids[cut:], labels[cut:], vocabulary=vocabulary)
    vocabulary.save(folder / "vocab.txt")
    np.save(folder / "embeddings.npy", embedding_matrix(glove, vocabulary.tokens).matrix)
    return {
        "train": folder / "train",
        "test": folder / "test",
        "vocab": folder / "vocab.txt",
        "embeddings": folder / "embeddings.npy",
    }


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> dict[str, Path]:
    return write_prepared(tmp_path / "prepared")


# The tiny training: the default model, a few seconds on write_prepared's data.
TINY_TRAINING = {"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "ngram_buckets": 256, "patience": 5}


@dataclasses.dataclass(frozen=True)
class TinyTraining:
    config: Any  # model_lib.config.TrainConfig
    data: Any  # model_lib.prepared.PreparedData
    result: Any  # model_lib.training.TrainResult
    model_file: Path  # the raw-string model.keras


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory: pytest.TempPathFactory) -> TinyTraining:
    """The fast tier's one real training (TINY_TRAINING on write_prepared's data), its raw-string model
    saved; shared by the tests that only read what it made (they must not change it)."""
    from model_lib.config import TrainConfig
    from model_lib.export import save_model
    from model_lib.prepared import load_prepared
    from model_lib.training import run

    folder = tmp_path_factory.mktemp("tiny-training")
    config = TrainConfig(**TINY_TRAINING)
    data = load_prepared(**write_prepared(folder / "prepared"))
    result = run(config, data, verbose=0)
    save_model(result.raw_model, folder / "model.keras")
    return TinyTraining(config, data, result, folder / "model.keras")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"no answer from {url} within {seconds} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def serving(command: list[str], health_path: str, port: int, env: dict[str, str], seconds: float, **popen: Any) -> Iterator[str]:
    """Run a server on 127.0.0.1:``port`` in its own session; yield its URL once ``health_path``
    answers; stop it (and its workers) by its process group."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True, **popen)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + health_path, process, seconds)
        yield url
    finally:
        _stop(process)


MLFLOW_ADMIN = ("admin", "admin-password-for-tests")  # the basic-auth app's first user, made from its ini file


def start_mlflow_server(
    root: Path, port: int, artifact_root: str | None = None, basic_auth: bool = False
) -> subprocess.Popen[bytes]:
    """Start a real `mlflow server` on 127.0.0.1:``port`` (sqlite store and proxied artifacts under
    ``root``) in its own session; return it once /health answers. Stop it with :func:`stop_server`.

    With ``artifact_root`` (e.g. ``s3://bucket/mlflow``) the server does not proxy artifacts: clients
    write them there themselves, as with SageMaker managed MLflow. With ``basic_auth`` it runs MLflow's
    own basic-auth app: every request but /health needs a user's password; :data:`MLFLOW_ADMIN` is the
    first user, and the users made through its users API may read every experiment and write to those
    they create."""
    command = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
    ]  # fmt: skip
    if artifact_root is None:
        command += ["--artifacts-destination", str(root / "artifacts")]
    else:
        command += ["--default-artifact-root", artifact_root, "--no-serve-artifacts"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if basic_auth:
        ini = root / "basic_auth.ini"
        ini.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root}/basic_auth.db\n"
            f"admin_username = {MLFLOW_ADMIN[0]}\nadmin_password = {MLFLOW_ADMIN[1]}\n"
        )
        command += ["--app-name", "basic-auth"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY="tests-only")
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", process, 90)
    except BaseException:
        _stop(process)
        raise
    return process


def logged_model(client: Any, run_id: str) -> Any:
    """Return the one MLflow logged model of run ``run_id`` (it must have exactly one, READY)."""
    outputs = client.get_run(run_id).outputs
    ids = [output.model_id for output in (outputs.model_outputs if outputs else [])]
    assert len(set(ids)) == 1, f"run {run_id} has logged models {ids}"
    model = client.get_logged_model(ids[0])
    assert str(model.status) in ("READY", "LoggedModelStatus.READY"), model.status
    return model


def logged_datasets(client: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """Return the datasets of run ``run_id`` as its page shows them: by name, the digest, source type,
    source URI, rows (profile ``num_rows``; None without a profile) and ``mlflow.data.context``."""
    found = {}
    for entry in client.get_run(run_id).inputs.dataset_inputs:
        dataset, tags = entry.dataset, {tag.key: tag.value for tag in entry.tags}
        assert dataset.name not in found, f"run {run_id}: dataset {dataset.name!r} logged twice"
        found[dataset.name] = {
            "digest": dataset.digest,
            "source_type": dataset.source_type,
            "source": json.loads(dataset.source)["uri"],
            "rows": json.loads(dataset.profile)["num_rows"] if dataset.profile else None,
            "context": tags.get("mlflow.data.context"),
        }
    return found


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started in its own session, workers included (by its process group)."""
    _stop(process)


def _session_mlflow_server(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Iterator[str]:
    port = free_port()
    process = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), port, **options)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 that proxies artifacts; yields its URI."""
    yield from _session_mlflow_server(tmp_path_factory)


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """:func:`mlflow_server` as MLflow's own basic-auth app (:func:`start_mlflow_server`); yields its URI."""
    yield from _session_mlflow_server(tmp_path_factory, basic_auth=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto server (S3, ECR, IAM, SageMaker, STS, ...) on 127.0.0.1, in this process (subprocesses
    reach it by its URL; tests can reach its backends, as :func:`fake_sagemaker` does); yields its URL."""
    import logging

    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # read when moto makes an IAM backend
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fake_sagemaker(moto_server: str) -> Iterator[FakeSageMaker]:
    """:func:`moto_server`'s training jobs living as SageMaker's (tests/standins/fake_sagemaker.py) for
    this module's tests; yields the FakeSageMaker that ends them."""
    from tests.standins.fake_sagemaker import FakeSageMaker

    fake = FakeSageMaker()
    with pytest.MonkeyPatch.context() as patch:
        fake.install(patch)
        yield fake


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at the moto server with throw-away credentials (never real ones)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


def sagemaker_env(base: Path, channels: dict[str, Path] | None = None, hps: dict[str, object] | None = None) -> dict[str, str]:
    """Return the SM_* variables the toolkit would set for ``base`` (for in-process unit tests)."""
    env = {
        "SM_MODEL_DIR": str(base / "model"),
        "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
        "SM_OUTPUT_DIR": str(base / "output"),
        "SM_HPS": json.dumps(hps or {}),
        "SAGEMAKER_BASE_DIR": str(base),
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": "2",
    }
    if channels:
        env["SM_CHANNELS"] = json.dumps(sorted(channels))
        for name, folder in channels.items():
            env[f"SM_CHANNEL_{name.upper()}"] = str(folder)
    return env


@pytest.fixture
def sagemaker_base_dir(tmp_path: Path, tiny_prepared: dict[str, Path]) -> Path:
    """A SAGEMAKER_BASE_DIR laid out as the toolkit expects, channels filled from tiny prepared data,
    each file under a hash-like name (as DVC names objects)."""
    from model_lib.sagemaker.basedir import lay_out

    base = tmp_path / "opt_ml"
    lay_out(base, {"epochs": "1"}, tiny_prepared, REPO / "entry_point")
    for name in ("vocab", "embeddings"):  # the splits' parts are laid out under their md5 names already
        folder = base / "input" / "data" / name
        only = next(folder.iterdir())
        only.rename(folder / f"{abs(hash(name)) % 10**12:012x}")
    return base


def run_checked(
    command: list[str], cwd: Path, env: dict[str, str], expect: int = 0, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd``; assert it exits ``expect`` (the output's tail in the message); return it."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, (
        f"{' '.join(command)}: exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def git_copy_of_repo(target: Path, params: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """Copy the repo's tracked and new files into ``target``, apply ``params`` to params.yaml, drop
    dvc.lock, commit it all in a new git repo; return the environment to run dvc and model-lib there."""
    import shutil

    import yaml

    command = ["git", "ls-files", "-co", "--exclude-standard"]
    listed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    values = yaml.safe_load((target / "params.yaml").read_text())
    for section, changes in (params or {}).items():
        values[section].update(changes)
    (target / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (target / "dvc.lock").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, env=env, check=True, capture_output=True)
    return env
