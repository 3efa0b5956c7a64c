"""Runs to compare with the default one in the README's experiment picture: short variants of it.

Each variant is `model-lib train` then `model-lib evaluate` with a few params overridden, in a
temporary folder holding copies of the repo's params.yaml, dvc.lock and prepared data, so the
repo's own outputs (models/, reports/) are left as `make run` wrote them. The runs go to the repo's
local store, in the default run's experiment, named after their variant (tag VARIANT_TAG); a
variant already in the store is not trained again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL_LIB = str(Path(sys.executable).parent / "model-lib")
VARIANT_TAG = "model_lib.docs_variant"
# Two epochs each: about a minute a run on 2 cores with the bundled data.
VARIANTS: dict[str, dict[str, str]] = {
    "no-glove-init": {"train.epochs": "2", "train.glove_init": "false"},
    "unigrams-only": {"train.epochs": "2", "train.ngram_order": "1"},
}
INPUTS = ("params.yaml", "dvc.lock", "data/prepared/train", "data/prepared/test",
          "data/prepared/vocab.txt", "data/prepared/embeddings.npy")  # fmt: skip


def train_command(overrides: dict[str, str]) -> list[str]:
    """Return the `model-lib train` command line for a variant's param overrides."""
    sets = [part for key, value in overrides.items() for part in ("-S", f"{key}={value}")]
    return [MODEL_LIB, "train", *sets]


def variant_environment(repo: Path, experiment: str, name: str) -> dict[str, str]:
    """Return the environment a variant runs in: the repo's store, the experiment, its name as tags."""
    tags = {"mlflow.runName": name, VARIANT_TAG: name}
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db",
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MODEL_LIB_MLFLOW_TAGS": json.dumps(tags),
    }


def copy_inputs(repo: Path, folder: Path) -> None:
    """Copy what a train and an evaluate read from ``repo`` into ``folder``; raises SystemExit if data is missing."""
    for name in INPUTS:
        if not (repo / name).is_file():
            raise SystemExit(f"{repo / name}: missing; run `make run` first")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, folder / name)


def run_variant(repo: Path, experiment: str, name: str) -> str:
    """Train and evaluate one variant; return its run id. Raises SystemExit (with the stage's stderr) if one fails."""
    with tempfile.TemporaryDirectory(prefix=f"docs-{name}-") as temporary:
        folder = Path(temporary)
        copy_inputs(repo, folder)
        env = variant_environment(repo, experiment, name)
        for command in (train_command(VARIANTS[name]), [MODEL_LIB, "evaluate"]):
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"render_pictures: {' '.join(command[1:])} ({name}) failed:\n{done.stderr[-3000:]}")
        return str(json.loads((folder / "models" / "mlflow_run.json").read_text(encoding="utf-8"))["run_id"])


def existing_variants(repo: Path, experiment_id: str) -> dict[str, str]:
    """Return {variant: run id} of the finished variant runs already in the repo's store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{VARIANT_TAG}` LIKE '%'", max_results=100)
    return {run.data.tags[VARIANT_TAG]: run.info.run_id for run in runs if run.info.status == "FINISHED"}


def ensure_variants(repo: Path, experiment_id: str, experiment: str) -> dict[str, str]:
    """Return {variant: run id} for every VARIANTS entry, training those the store does not hold yet."""
    runs = existing_variants(repo, experiment_id)
    for name in VARIANTS:
        if name not in runs:
            print(f"render_pictures: training the comparison run {name} ({VARIANTS[name]})")
            runs[name] = run_variant(repo, experiment, name)
    return runs
