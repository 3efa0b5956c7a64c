"""`tox -e docker-local`: the SageMaker SDK's own local mode (instance_type="local") runs our image
in Docker. Without a Docker engine (as on our CI machines) it is skipped, saying so."""

import shutil
import subprocess
from pathlib import Path

import pytest

from model_lib.prepared import channel_paths

REPO = Path(__file__).resolve().parents[2]


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


pytestmark = pytest.mark.skipif(
    not docker_engine_answers(),
    reason="no Docker engine answers `docker info`: SDK local mode needs one (tox -e local runs without)",
)


def test_sdk_local_mode_trains_in_the_cpu_image(tmp_path):
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession

    # docker-compose.yml tags the CPU image <ECR_URL>:cpu-<TAG>: the one built here is the one run.
    image = "model-lib-training:cpu-sdk-local-test"
    subprocess.run(["make", "-C", str(REPO), "docker-build", "ECR_URL=model-lib-training", "TAG=sdk-local-test"], check=True)
    prepared = REPO / "data" / "prepared"
    session = LocalSession()
    session.config = {"local": {"local_code": True}}
    estimator = Estimator(
        image_uri=image,
        role="arn:aws:iam::000000000000:role/local",
        instance_count=1,
        instance_type="local",
        entry_point="train.py",
        source_dir=str(REPO / "entry_point"),
        hyperparameters={"epochs": 1},
        sagemaker_session=session,
        output_path=f"file://{tmp_path}",
    )
    estimator.fit({name: f"file://{path}" for name, path in channel_paths(prepared).items()})
    assert list(tmp_path.rglob("model.tar.gz"))
