"""model_lib: IMDB sentiment with GloVe 50d in Keras 3, run by DVC, MLflow and SageMaker script mode."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# requirements.txt names what the library needs at run time (also what the training image installs);
# constraints.txt pins every package of the environment to versions that resolve together.
REQUIREMENTS = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

# The version is written once, in model_lib/__init__.py (read as text: importing needs the dependencies).
VERSION = re.search(r'^__version__ = "([^"]+)"', Path(__file__).with_name("model_lib").joinpath("__init__.py").read_text(), re.M)

setup(
    name="model-lib",
    version=VERSION.group(1),
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["model_lib", "model_lib.*"]),
    package_data={"model_lib.sagemaker": ["prices.json"]},  # the on-demand price table (sagemaker/cost.py)
    install_requires=REQUIREMENTS,
    extras_require={
        "sagemaker": ["sagemaker==2.257.7", "sagemaker-training==5.1.4"],
        # Keras' JAX backend: multi-device and multi-host data parallel training (model_lib.distributed).
        "jax": ["jax==0.10.2", "jaxlib==0.10.2"],
        # GPU metrics in the MLflow run (pynvml; the GPU image installs it).
        "gpu": ["nvidia-ml-py==13.615.71"],
    },
    # model-lib-serve: the serving image's `serve` (docker/Dockerfile links it), SageMaker's hosting contract.
    entry_points={"console_scripts": ["model-lib=model_lib.cli:main", "model-lib-serve=model_lib.serving:main"]},
    license="Apache-2.0",
)
