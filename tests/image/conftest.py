"""The training image, built once per session by docker/build_image.py (tox -e image)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import REPO

BUILD_SCRIPT = REPO / "docker" / "build_image.py"
CANNOT_BUILD = 77  # build_image.py: this machine cannot build the image (the reason is printed)


@dataclass(frozen=True)
class Image:
    engine: str  # "docker" or "podman"
    name: str
    env: dict[str, str]  # the engine's environment (podman: its config and storage under build/containers)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The CPU image, built once per session by docker/build_image.py (cached layers make a rebuild quick)."""
    folder = tmp_path_factory.mktemp("image-build")
    result, log = folder / "build.json", folder / "build.log"
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--json", str(result)], stdout=handle, stderr=subprocess.STDOUT, timeout=3000
        )
    if done.returncode == CANNOT_BUILD:
        pytest.skip(json.loads(result.read_text())["cannot"])
    tail = log.read_text(errors="replace")[-6000:]
    assert done.returncode == 0, f"docker/build_image.py failed (exit {done.returncode}); log {log}:\n{tail}"
    built = json.loads(result.read_text())
    print(f"built {built['image']} in {built['seconds']} s, {built['size_bytes'] / 1e9:.2f} GB", file=sys.stderr)
    return Image(built["engine"], built["image"], {**os.environ, **built["env"]})
