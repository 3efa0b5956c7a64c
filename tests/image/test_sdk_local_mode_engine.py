"""The SageMaker SDK's own local mode (instance_type="local") on the image built here.

With podman, the SDK talks to `podman system service` (the Docker API) through DOCKER_HOST, and runs
the job with a compose command: Docker's `docker compose` plugin where it exists, else Debian's
docker-compose (compose v1). Compose v1 exits 0 even when the job's container fails, so the SDK
reports a failed job as complete: this test judges the job by its outputs (`success`, no `failure`).

The SDK's compose file reaches the job's container only by a network alias (`algo-1-xxxx`), through
the compose network's DNS; without it the toolkit waits 15 minutes for its own host name. A probe
container checks that an alias resolves on that network first, so a network without DNS fails in
seconds, and the test has a time limit of its own well under that wait.
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, write_prepared
from tests.image.conftest import BUILD_SCRIPT, CANNOT_BUILD, Image

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.slow]

# Resolve argv[1] as the toolkit resolves its host name, retrying briefly (a name server starting up).
RESOLVE = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        print(socket.gethostbyname(sys.argv[1]))
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"{sys.argv[1]}: {exc}")
        time.sleep(0.5)
"""


@dataclass(frozen=True)
class DockerApi:
    env: dict[str, str]  # the environment in which `docker` and compose reach the engine
    network: str  # the network the SDK's compose file puts the job on (build_image.py's --check says which)


@pytest.fixture(scope="module")
def docker_api(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerApi]:
    """Where `docker` and compose reach the engine that holds the image, and the SDK's network."""
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
    network = json.loads((folder / "check.json").read_text())["network"]
    if image.engine == "docker":
        yield DockerApi(image.env, network)
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
        yield DockerApi(env, network)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)


def containers(image: Image) -> set[str]:
    listed = [image.engine, "ps", "--all", "--quiet", "--no-trunc", "--filter", f"ancestor={image.name}"]
    return set(subprocess.run(listed, env=image.env, capture_output=True, text=True, timeout=120).stdout.split())


def engine(image: Image, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([image.engine, *args], env=image.env, capture_output=True, text=True, timeout=timeout)


def assert_aliases_resolve(image: Image, network: str) -> None:
    """Fail at once unless a container on ``network`` (else on a new network, as compose makes it)
    resolves its own network alias, as the job's container must resolve its `algo-1-xxxx`."""
    probe_network = network
    if engine(image, "network", "inspect", network).returncode != 0:  # compose makes it: probe a new one
        probe_network = f"model-lib-dns-probe-{uuid.uuid4().hex[:8]}"
        made = engine(image, "network", "create", probe_network)
        assert made.returncode == 0, made.stderr[-2000:]
    alias = f"algo-probe-{uuid.uuid4().hex[:4]}"
    command = ["run", "--rm", "--network", probe_network, "--network-alias", alias, "--entrypoint", "python3"]
    if image.engine == "podman":
        command.append("--no-healthcheck")  # podman 4.3 treats HEALTHCHECK NONE as one and asks systemd for a timer
    try:
        probe = engine(image, *command, image.name, "-c", RESOLVE, alias)
    finally:
        if probe_network != network:
            engine(image, "network", "rm", probe_network)
    assert probe.returncode == 0, (
        f"a container on {image.engine} network {probe_network} cannot resolve its network alias {alias}, so the "
        f"SDK's job would wait 15 minutes for its host name (no DNS on the network: `docker/build_image.py --check "
        f"--local-mode-tools` installs the plugin and removes a {network} made without it):\n"
        + (probe.stdout + probe.stderr)[-2000:]
    )


# Well under the toolkit's 15-minute wait for its host name; the image build (a fixture) is not counted.
@pytest.mark.timeout(600, func_only=True)
def test_sdk_local_mode_trains_in_the_image(
    image: Image, docker_api: DockerApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession

    assert_aliases_resolve(image, docker_api.network)
    for name, value in docker_api.env.items():
        monkeypatch.setenv(name, value)
    # Throw-away credentials, never real ones: local mode calls no AWS service.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # One folder per channel: the SDK mounts a file:// channel's folder, not the file; a split is a folder already.
    channels = {}
    for name, path in write_prepared(tmp_path / "prepared").items():
        folder = tmp_path / "channels" / name
        if path.is_dir():
            shutil.copytree(path, folder)
        else:
            folder.mkdir(parents=True)
            shutil.copy2(path, folder / path.name)
        channels[name] = f"file://{folder}"
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
