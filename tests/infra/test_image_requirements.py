"""One source of truth: the training image installs exactly the requirement set the tests install."""

import configparser
import re

from tests.conftest import REPO


def test_image_installs_requirements_txt_under_the_same_constraints():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "COPY requirements.txt constraints.txt ./" in dockerfile
    assert re.search(r"pip install -c constraints\.txt -r requirements\.txt sagemaker-training", dockerfile)


def test_test_environments_install_the_same_files():
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini")
    for env in ("testenv", "testenv:local"):
        deps = tox[env]["deps"].split()
        assert "-r" in deps and "requirements.txt" in deps and "constraints.txt" in deps, env


def pins(path):
    """Return {normalised name: version} of every requirement line of a requirements file.

    A line without ``==`` is kept with version None, so an unpinned requirement fails the check below.
    """
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip() or None
    return found


def test_every_requirement_is_pinned_to_its_constraint():
    constraints = pins(REPO / "constraints.txt")
    requirements = {**pins(REPO / "requirements.txt"), **pins(REPO / "requirements-dev.txt")}
    assert len(requirements) > 20
    for name, version in requirements.items():
        assert version is not None and constraints.get(name) == version, name


def test_image_bakes_in_nothing_run_specific():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for secret_or_run_setting in ("AWS_ACCESS_KEY", "AWS_SECRET", "MLFLOW_TRACKING_URI", "SM_HP_", "SAGEMAKER_PROGRAM"):
        assert secret_or_run_setting not in dockerfile
    assert not re.search(r"^COPY .*(/opt/ml/code|entry_point)", dockerfile, re.MULTILINE)


def test_both_images_can_record_system_metrics_and_the_gpu_image_its_gpus():
    """psutil (CPU, memory, disk, network) for every image; nvidia-ml-py (pynvml) for the GPU image."""
    assert pins(REPO / "requirements.txt")["psutil"] == pins(REPO / "constraints.txt")["psutil"]
    assert pins(REPO / "constraints.txt")["nvidia-ml-py"]
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    gpu_branch = re.search(r'if \[ "\$\{TF_PACKAGE\}" != "tensorflow-cpu" \]; then (.*?); fi', dockerfile, re.DOTALL)
    assert gpu_branch and "pip install -c constraints.txt nvidia-ml-py" in gpu_branch.group(1)
