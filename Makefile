# The two commands of the README: `make run` (the DVC pipeline on the bundled data, MLflow tracking
# locally) and `make test` (the whole suite through tox). Both create .venv first if it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint mlflow-server docs-picture docker-build docker-push docker-login clean-venv image image-gpu image-jax image-gpu-jax

$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@echo
	@echo "Done. Look at: .venv/bin/dvc metrics show | .venv/bin/dvc plots show (dvc_plots/index.html, works offline) | reports/*.png"
	@echo "      .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db | .venv/bin/model-lib predict \"A wonderful film.\""

# Two lanes on the 2 cores, so that `make test` stays within 30 minutes: py311 (every test tier,
# itself on both cores through pytest-xdist) in the foreground, and beside it the other envs in turn
# (lint and checkov first, then the image build, local mode, SDK local mode). The side lane's log is
# printed when both are done; either lane failing fails `make test`.
# The py311 lane is tox.ini's py311 command run from .venv, which the line above has just installed
# from the same constraints (tox would install it all a second time, about 3 minutes of the critical
# path), in an environment as bare as tox's: its pass_env and set_env (SHELL unset, as under tox).
TOX_SIDE_ENVS := lint,checkov,image,local,docker-local
PY311_COMMAND = $(shell sed -n '/^\[testenv\]/,/^\[/{/^    pytest /p}' tox.ini | sed 's/ {posargs}//')
BARE_ENV = env -i HOME="$$HOME" TMPDIR="$${TMPDIR:-/tmp}" CI="$${CI:-}" LANG="$${LANG:-C.UTF-8}" \
	PATH="$(CURDIR)/$(BIN):$$PATH" TF_CPP_MIN_LOG_LEVEL=2 MLFLOW_TRACKING_URI=
test: $(STAMP)
	@mkdir -p build
	@test -n "$(PY311_COMMAND)" || { echo "no pytest command found in tox.ini [testenv]"; exit 1; }
	export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	$(BIN)/tox run -e $(TOX_SIDE_ENVS) > build/tox-side.log 2>&1 & side=$$!; \
	echo "py311 (from .venv): $(PY311_COMMAND)"; $(BARE_ENV) $(PY311_COMMAND); main=$$?; \
	wait $$side; side_rc=$$?; \
	echo "---- tox -e $(TOX_SIDE_ENVS) (ran alongside; exit $$side_rc) ----"; cat build/tox-side.log; \
	test $$main -eq 0 && test $$side_rc -eq 0

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/tox run -e lint

# A shared MLflow server in one command (README: MLflow). Artifacts are proxied, so clients (a
# SageMaker job too) upload through the server and need no access to the artifact store. Point
# MLFLOW_ARTIFACTS at s3://<bucket>/mlflow to keep them in the Terraform bucket, MLFLOW_BACKEND at a
# postgresql:// URI for a team, and list the server's public name in MLFLOW_ALLOWED_HOSTS (by default
# it answers only local clients).
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_BACKEND ?= sqlite:///$(CURDIR)/mlflow-server/mlflow.db
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlflow-server/artifacts
MLFLOW_ALLOWED_HOSTS ?=

# The README's pictures (docs/*.png): the default run's MLflow pages, runs compared, `dvc plots show`'s page
# (headless Chromium, no network; skipped without one). After `make run`; trains two short comparison runs once.
docs-picture: $(STAMP)
	$(BIN)/python -m docs.render_pictures

mlflow-server: $(STAMP)
	mkdir -p mlflow-server
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination $(MLFLOW_ARTIFACTS) \
		$(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts $(MLFLOW_ALLOWED_HOSTS))

clean-venv:
	rm -rf $(VENV) .tox

# Training images (README.md, "Images and infrastructure"): the ECR URL comes from `terraform output`.
ECR_URL ?= $(shell terraform -chdir=terraform output -raw ecr_repository_url 2>/dev/null)
AWS_REGION ?= $(shell terraform -chdir=terraform output -raw region 2>/dev/null)
# Images are tagged <cpu|gpu>-<TAG>; `model-lib launch` looks for the same tag (image_tag in launch.py).
TAG ?= $(shell git rev-parse --short=7 HEAD)

docker-login:
	aws ecr get-login-password --region $(AWS_REGION) | docker login --username AWS --password-stdin $(firstword $(subst /, ,$(ECR_URL)))

docker-build:
	python3 -m pip wheel --no-deps -w docker/dist .
	ECR_URL=$(ECR_URL) TAG=$(TAG) docker compose -f docker/docker-compose.yml build

docker-push: docker-build
	ECR_URL=$(ECR_URL) TAG=$(TAG) docker compose -f docker/docker-compose.yml push

# The training image built here, with whichever engine exists: docker if a daemon answers, else
# buildah + podman (installed with apt-get when missing, as root), storage under build/containers/;
# from a locally made Debian base when no registry answers. Tagged model-lib:<cpu|gpu>-$(TAG).
# docker/README.md has the details, sizes and times; `tox -e image` builds it and runs it as SageMaker does.
IMAGE_ARGS ?=

image: $(STAMP)
	$(BIN)/python docker/build_image.py --tag cpu-$(TAG) $(IMAGE_ARGS)

image-gpu: $(STAMP)
	$(BIN)/python docker/build_image.py --gpu --tag gpu-$(TAG) $(IMAGE_ARGS)

# With jax, for --instance-count > 1 (launch looks for <cpu|gpu>-jax-<commit>).
image-jax: $(STAMP)
	$(BIN)/python docker/build_image.py --jax --tag cpu-jax-$(TAG) $(IMAGE_ARGS)

image-gpu-jax: $(STAMP)
	$(BIN)/python docker/build_image.py --gpu --jax --tag gpu-jax-$(TAG) $(IMAGE_ARGS)
