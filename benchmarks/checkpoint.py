"""What spot-safe checkpointing costs, on the default data and model (bundled IMDB, 18,000 training
reviews after the validation slice, ngram_glove): seconds per save, bytes per generation, training
time with and without checkpoints, and the work lost when a job is killed. Target: checkpoints cost
<= 2% of training time at the default `checkpoint_steps`.

Two epochs per run. The time training *waits* for checkpoints is measured inside each run
(TrainResult.checkpoint_seconds: the copy of the variables at each save, plus the wait for the last
write at the end; the files are written on a background thread), so that share does not depend on
how busy the machine was. End-to-end times are printed too, but on 2 shared cores their noise
(+-10%) is larger than the effect.

    python benchmarks/checkpoint.py [--steps 25 50 100 200]
Prints a table and writes benchmarks/results/checkpoint.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results
from quality import prepared_default_split

EPOCHS = 2


def generation_bytes(folder: Path) -> int:
    """Return the bytes of the newest generation in a checkpoint folder (best.npz counted once)."""
    from model_lib import checkpoints

    newest = folder / f"gen-{checkpoints.generation_numbers(folder)[0]:06d}"
    return sum(p.stat().st_size for p in newest.iterdir())


def main() -> None:
    from model_lib.config import TrainConfig
    from model_lib.training import effective_hyperparameters, run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200], help="checkpoint_steps values to try")
    args = parser.parse_args()
    default = TrainConfig().checkpoint_steps
    data = prepared_default_split()[0]

    run(dataclasses.replace(TrainConfig(), epochs=1), data, verbose=0)  # warm-up: first-run costs (tracing) excluded
    baseline = run(dataclasses.replace(TrainConfig(), epochs=EPOCHS), data, verbose=0)
    steps_per_epoch = -(-round(len(data.x_train) * 0.9) // effective_hyperparameters(TrainConfig())["batch_size"])
    step_seconds = baseline.train_seconds / (steps_per_epoch * EPOCHS)
    rows = [{"checkpoint_steps": "none", "train_seconds": round(baseline.train_seconds, 2)}]
    milliseconds = step_seconds * 1000
    steps = steps_per_epoch * EPOCHS
    print(f"no checkpoints: {baseline.train_seconds:.1f} s for {steps} steps ({milliseconds:.0f} ms/step)", flush=True)
    for every in sorted(set(args.steps) | {default}):
        with tempfile.TemporaryDirectory() as folder:
            config = dataclasses.replace(TrainConfig(), epochs=EPOCHS, checkpoint_steps=every)
            result = run(config, data, checkpoint_dir=folder, verbose=0)
            size = generation_bytes(Path(folder))
        per_save = (result.checkpoint_seconds - result.checkpoint_final_seconds) / max(1, result.checkpoints_saved)
        row = {
            "checkpoint_steps": every,
            "train_seconds": round(result.train_seconds, 2),
            "saves_per_epoch": result.checkpoints_saved // EPOCHS,
            "wait_per_save_s": round(per_save, 3),
            "final_wait_s": round(result.checkpoint_final_seconds, 2),
            "checkpoint_share": round(result.checkpoint_seconds / result.train_seconds, 4),
            "generation_mb": round(size / 2**20, 1),
            "lost_on_kill_mean_s": round(every * step_seconds / 2, 1),
            "lost_on_kill_max_s": round(every * step_seconds, 1),
        }
        rows.append(row)
        print(f"checkpoint_steps {every}: {row}", flush=True)
    columns = ["checkpoint_steps", "train_seconds", "saves_per_epoch", "wait_per_save_s", "final_wait_s", "checkpoint_share"]
    columns += ["generation_mb", "lost_on_kill_mean_s", "lost_on_kill_max_s"]
    print(table(rows, columns))
    share = next(r["checkpoint_share"] for r in rows if r["checkpoint_steps"] == default)
    print(f"default checkpoint_steps={default}: {share:.2%} of training time (target <= 2%)")
    figures = {"runs": rows, "default_checkpoint_steps": default, "steps_per_epoch": steps_per_epoch}
    figures["step_seconds"] = step_seconds
    print(f"wrote {write_results('checkpoint', figures)}")


if __name__ == "__main__":
    main()
