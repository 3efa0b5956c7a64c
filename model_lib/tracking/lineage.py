"""Lineage: which code (git commit, dirty flag) and which data (the MD5 DVC records for each input)
a run was trained from, as run tags.

An input's digest is what dvc.lock records for it, computable with or without DVC:

- a file: the MD5 of its bytes (:func:`file_md5`);
- a folder (a DVC directory output): DVC 3's ``.dir`` MD5, ``<md5>.dir``, the MD5 of the JSON list
  of ``{"md5": <file md5>, "relpath": <posix path in the folder>}`` sorted by relpath
  (:func:`dir_md5`; dvc_data's ``Tree.as_bytes``). It names the ``.dir`` object in the DVC remote.

Inside a SageMaker job a folder channel holds the DVC objects under their MD5 names, not the files'
own paths, so its ``.dir`` MD5 cannot be computed there: the launcher passes each folder channel's
digest in :data:`model_lib.tracking.datasets.DATA_DIGESTS_ENV`, and a given digest wins over one
computed here (``digests`` arguments).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from model_lib.parent_watch import DVC_STAGE_ENV

logger = logging.getLogger(__name__)

TAGS_ENV = "MODEL_LIB_MLFLOW_TAGS"
SWEEP_ENV = "MODEL_LIB_SWEEP"  # names the sweep a run belongs to (default: the DVC experiments' baseline)
SWEEP_TAG = "sweep"
# What `dvc exp run` (and each queued experiment DVC runs) sets in the stage's environment.
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"
DVC_EXP_BASELINE_ENV = "DVC_EXP_BASELINE_REV"
_TAG_VALUE = re.compile(r"[\w.:/=+@ -]{1,128}")  # what both MLflow and SageMaker job tags take
CODE_TAGS = ("git_commit", "git_dirty")
DATA_TAG_PREFIX = "dvc_md5."  # + the input's name: the MD5 of that file
# The MD5 of the model file the run wrote (dvc.lock's md5 of models/model.keras): from a commit's
# dvc.lock to the run that made its model. Not a dvc_md5. tag: those name the inputs.
MODEL_MD5_TAG = "model_md5"


def file_md5(path: str | os.PathLike[str]) -> str:
    """Return the MD5 of a file's bytes (what DVC 3 records for a file output)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_entries(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Return the ``.dir`` listing DVC 3 records for ``folder``: ``{"md5", "relpath"}`` for every
    regular file under it (recursively), sorted by relpath (posix separators)."""
    root = Path(folder)
    entries = [
        {"md5": file_md5(path), "relpath": path.relative_to(root).as_posix()} for path in root.rglob("*") if path.is_file()
    ]
    return sorted(entries, key=lambda entry: entry["relpath"])


def dir_md5(folder: str | os.PathLike[str]) -> str:
    """Return the MD5 DVC 3 records for a directory output: ``<md5 of the .dir listing>.dir``."""
    listing = json.dumps(dir_entries(folder), sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def input_md5(path: str | os.PathLike[str]) -> str | None:
    """Return what DVC records for ``path``: :func:`file_md5` of a file, :func:`dir_md5` of a folder;
    None when there is nothing at ``path``."""
    if Path(path).is_file():
        return file_md5(path)
    if Path(path).is_dir():
        return dir_md5(path)
    return None


def git_state(repo: str | os.PathLike[str] = ".") -> dict[str, str]:
    """Return git_commit, git_short (``--short=7``, the form image tags use) and git_dirty of
    ``repo``; each is "unknown" outside git (a training container has no git).

    Inside a DVC stage the pipeline's own products (dvc.lock and every output dvc.yaml names) do not
    make the tree dirty: DVC deletes a stage's outputs before it runs it and rewrites dvc.lock after
    each stage, so a clean clone's `dvc repro` would otherwise call every run dirty.
    """

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout

    try:
        commit, short = git("rev-parse", "HEAD").strip(), git("rev-parse", "--short=7", "HEAD").strip()
        changed = git("status", "--porcelain", "-z", "--untracked-files=no").split("\0")
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_short": "unknown", "git_dirty": "unknown"}
    paths = {entry[3:] for entry in changed if len(entry) > 3}
    if DVC_STAGE_ENV in os.environ:
        paths -= pipeline_products(repo)
    return {"git_commit": commit, "git_short": short, "git_dirty": "true" if paths else "false"}


def pipeline_products(repo: str | os.PathLike[str] = ".") -> set[str]:
    """Return the paths DVC writes in ``repo``: dvc.lock and every stage's outs, metrics and plots in
    dvc.yaml (only dvc.lock when dvc.yaml cannot be read)."""
    import yaml

    try:
        spec = yaml.safe_load((Path(repo) / "dvc.yaml").read_text(encoding="utf-8"))
        stages = spec.get("stages", {}).values()
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return {"dvc.lock"}
    found = {"dvc.lock"}
    for stage in stages:
        for key in ("outs", "metrics", "plots"):
            for item in (stage.get(key) or []) if isinstance(stage, dict) else []:
                found.add(str(next(iter(item))) if isinstance(item, dict) else str(item))
    return found


def lineage_tags(
    inputs: Mapping[str, str | os.PathLike[str]],
    repo: str | os.PathLike[str] = ".",
    digests: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return tags naming the code (git commit, dirty flag) and the data (the DVC MD5 of each input,
    file or folder; ``digests`` gives it for inputs by name, as a job's launcher does)."""
    git = git_state(repo)
    tags = {"git_commit": git["git_commit"]}
    if git["git_dirty"] != "unknown":
        tags["git_dirty"] = git["git_dirty"]
    for name, path in inputs.items():
        md5 = (digests or {}).get(name) or input_md5(path)
        if md5:
            tags[f"{DATA_TAG_PREFIX}{name}"] = md5
    tags.update(experiment_tags())
    tags.update(user_tags())
    return tags


def experiment_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the DVC experiment a run trains and the sweep it belongs to, as run tags.

    ``dvc_experiment`` is the experiment's name (DVC_EXP_NAME) and ``dvc_baseline`` the commit it
    branches from. ``sweep`` is MODEL_LIB_SWEEP when set (export it in the shell that runs
    ``dvc queue start``: that start's experiments share it), else ``dvc-exp-<baseline short commit>``,
    the experiments ``dvc exp show`` lists together. Outside ``dvc exp run``, with no MODEL_LIB_SWEEP: none.

    Raises:
        ConfigError: if MODEL_LIB_SWEEP is not 1-128 letters, digits, spaces or ``_.:/=+@-``.
    """
    from model_lib.errors import ConfigError

    env = os.environ if environ is None else environ
    tags = {}
    name, baseline = env.get(DVC_EXP_NAME_ENV, "").strip(), env.get(DVC_EXP_BASELINE_ENV, "").strip()
    if name:
        tags["dvc_experiment"] = name
    if baseline:
        tags["dvc_baseline"] = baseline
        tags[SWEEP_TAG] = f"dvc-exp-{baseline[:7]}"
    sweep = env.get(SWEEP_ENV, "").strip()
    if sweep:
        if not _TAG_VALUE.fullmatch(sweep):
            raise ConfigError(f"{SWEEP_ENV}={sweep[:80]!r}: expected 1-128 letters, digits, spaces or _.:/=+@-")
        tags[SWEEP_TAG] = sweep
    return tags


def user_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the run tags in MODEL_LIB_MLFLOW_TAGS (a JSON object; unset or empty: none), values as strings.

    Raises:
        ConfigError: if it is not a JSON object of names to strings, numbers or booleans.
    """
    from model_lib.errors import ConfigError

    raw = (os.environ if environ is None else environ).get(TAGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except ValueError:
        tags = None
    if not isinstance(tags, dict) or not all(isinstance(v, (str, int, float)) for v in tags.values()):
        raise ConfigError(f'{TAGS_ENV}: expected a JSON object of tags, e.g. {{"team": "nlp"}}, got {raw[:80]!r}')
    return {str(k): str(v) for k, v in tags.items()}
