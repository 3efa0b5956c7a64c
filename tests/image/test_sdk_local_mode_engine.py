"""The SageMaker SDK's own local mode (instance_type="local") on the image built here.

With podman, the SDK talks to `podman system service` (the Docker API) through DOCKER_HOST, and runs
the job with a compose command: Docker's `docker compose` plugin where it exists, else Debian's
docker-compose (compose v1). Compose v1 exits 0 even when the job's container fails, so the SDK
reports a failed job as complete: this test judges the job by its outputs (`success`, no `failure`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, write_prepared
from tests.image.conftest import BUILD_SCRIPT, CANNOT_BUILD, Image

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_api(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment in which `docker` and compose reach the engine that holds the image."""
    folder = tmp_path_factory.mktemp("docker-api")
    tools = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check", "--local-mode-tools", "--json", str(folder / "check.json")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if tools.returncode == CANNOT_BUILD:
        pytest.skip(json.loads((folder / "check.json").read_text())["cannot"])
    assert tools.returncode == 0, tools.stdout[-3000:] + tools.stderr[-3000:]
    if image.engine == "docker":
        yield image.env
        return
    socket = folder / "podman.sock"
    env = {**image.env, "DOCKER_HOST": f"unix://{socket}"}
    with (folder / "service.log").open("w") as log:
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            env=image.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=30).returncode != 0:
            assert service.poll() is None, (folder / "service.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "podman's Docker API did not answer within 60 s"
            time.sleep(0.5)
        yield env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)


def containers(image: Image) -> set[str]:
    listed = [image.engine, "ps", "--all", "--quiet", "--no-trunc", "--filter", f"ancestor={image.name}"]
    return set(subprocess.run(listed, env=image.env, capture_output=True, text=True, timeout=120).stdout.split())


def test_sdk_local_mode_trains_in_the_image(
    image: Image, docker_api: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession

    for name, value in docker_api.items():
        monkeypatch.setenv(name, value)
    # Throw-away credentials, never real ones: local mode calls no AWS service.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # One folder per channel: the SDK mounts a file:// channel's folder, not the file.
    channels = {}
    for name, path in write_prepared(tmp_path / "prepared").items():
        (tmp_path / "channels" / name).mkdir(parents=True)
        shutil.copy2(path, tmp_path / "channels" / name / path.name)
        channels[name] = f"file://{tmp_path / 'channels' / name}"
    (tmp_path / "root").mkdir()
    session = LocalSession()
    session.config = {"local": {"local_code": True, "container_root": str(tmp_path / "root")}}
    estimator = Estimator(
        image_uri=image.name,
        role="arn:aws:iam::000000000000:role/local",
        instance_count=1,
        instance_type="local",
        entry_point="train.py",
        source_dir=str(REPO / "entry_point"),
        hyperparameters={"epochs": "1", "ngram_buckets": "4096"},
        sagemaker_session=session,
        output_path=f"file://{tmp_path / 'out'}",
    )
    before = containers(image)
    try:
        estimator.fit(channels)
    finally:  # compose leaves the job's exited container behind
        for container in containers(image) - before:
            subprocess.run([image.engine, "rm", "--force", container], env=image.env, capture_output=True, timeout=120)

    with tarfile.open(tmp_path / "out" / "output.tar.gz") as archive:
        names = archive.getnames()
        reason = archive.extractfile("failure").read().decode() if "failure" in names else ""  # type: ignore[union-attr]
    assert "success" in names and not reason, reason[:2000]
    assert "data/metrics.json" in names, names
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as archive:
        archive.extractall(tmp_path / "model", filter="data")

    from model_lib.inference import load_model, predict

    probabilities = predict(load_model(tmp_path / "model" / "model.keras"), ["a wonderful , moving film"])
    assert probabilities.shape == (1,)
