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
    """Return {normalised name: version} of the name==version lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return found


def test_every_requirement_is_pinned_to_its_constraint():
    constraints = pins(REPO / "constraints.txt")
    for name, version in {**pins(REPO / "requirements.txt"), **pins(REPO / "requirements-dev.txt")}.items():
        assert constraints[name.split("[")[0]] == version, name


def test_image_bakes_in_nothing_run_specific():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for secret_or_run_setting in ("AWS_ACCESS_KEY", "AWS_SECRET", "MLFLOW_TRACKING_URI", "SM_HP_", "SAGEMAKER_PROGRAM"):
        assert secret_or_run_setting not in dockerfile
    assert not re.search(r"^COPY .*(/opt/ml/code|entry_point)", dockerfile, re.MULTILINE)
