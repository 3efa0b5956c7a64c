"""`model-lib launch` looks for the tag that `make image*` and `make docker-push` (docker-compose.yml) give
an image: read from those files, not restated."""

import re

import yaml

from model_lib.sagemaker.launch import image_tag
from tests.conftest import REPO

COMMIT = "0abc123"


def test_launch_asks_for_the_tags_docker_compose_pushes():
    services = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["services"]
    assert len(services) == 4
    for name, service in services.items():
        args = service["build"]["args"]
        kind = "gpu" if "cuda" in args["TF_PACKAGE"] else "cpu"
        pushed = re.sub(r"\$\{TAG[^}]*\}", COMMIT, service["image"].split("}:", 1)[1])
        assert image_tag(kind, COMMIT, jax="JAX_PACKAGE" in args) == pushed, name


def test_launch_asks_for_the_tags_make_image_builds():
    targets = re.findall(r"^(image[\w-]*):.*\n\t.*build_image\.py(.*)--tag (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert {target for target, _, _ in targets} == {"image", "image-gpu", "image-jax", "image-gpu-jax"}
    for target, flags, tag in targets:
        kind = "gpu" if "--gpu" in flags else "cpu"
        assert image_tag(kind, COMMIT, jax="--jax" in flags) == tag.replace("$(TAG)", COMMIT), target
