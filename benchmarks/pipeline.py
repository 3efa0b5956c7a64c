"""Wall time of each stage of the default `dvc repro`, from a clean state, in a temporary copy of the
repo (so nothing here is touched). Targets on 2 cores: the whole pipeline <= 8 minutes; everything
before `train` <= 30 s, imports included.

    python benchmarks/pipeline.py     # prints a table, writes benchmarks/results/pipeline.json
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import seconds_table, write_results

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "prepare", "train", "evaluate")
TARGETS = {"before_train": 30.0, "total": 480.0}


def copy_repo(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    (target / "dvc.lock").unlink(missing_ok=True)


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        copy_repo(work)
        for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark"]):
            subprocess.run(command, cwd=work, env=env, check=True)
        for stage in STAGES:
            started = time.perf_counter()
            subprocess.run(["dvc", "repro", "--single-item", stage], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
            seconds[stage] = time.perf_counter() - started
            print(f"{stage}: {seconds[stage]:.1f} s", flush=True)
        accuracy = (work / "reports" / "metrics.json").read_text()
    seconds["before_train"] = seconds["ingest"] + seconds["prepare"]
    seconds["total"] = sum(seconds[s] for s in STAGES)
    print(seconds_table(seconds, TARGETS, digits=1))
    import json

    metrics = json.loads(accuracy)
    print(f"test accuracy {metrics['accuracy']:.4f}")
    print(f"wrote {write_results('pipeline', {'seconds': seconds, 'targets': TARGETS, 'test_accuracy': metrics['accuracy']})}")


if __name__ == "__main__":
    main()
