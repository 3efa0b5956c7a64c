"""What spot-safe checkpointing costs, on the default data and model (bundled IMDB, 18,000 training
reviews after the validation slice, ngram_glove): bytes per generation, generations per minute, the
upload rate a spot job asks of SageMaker (it syncs /opt/ml/checkpoints to S3 as files appear; rates
are over the epochs: the NB-SVM views fitted after them save nothing), the time training waits,
and the work a kill without notice loses. Targets at the default cadence
(`checkpoint_seconds`): <= 2 MB/s of upload, <= 60 s of work lost, <= 2% of training time.

Each run trains EPOCHS epochs. The wait is measured inside each run (TrainResult.checkpoint_seconds:
the copy of the variables at each save, plus the wait for the last write at the end; the files are
written on a background thread), so it does not depend on how busy the machine was. The rate for a
GPU is estimated from the generation measured here and the step time of benchmarks/models_jax.py's
H100 run of the default model (benchmarks/results/models_jax_h100.json): by time, the rate is the
generation over the cadence whatever the step time; by steps, it grows with the speed of the machine.

    python benchmarks/checkpoint.py [--seconds 10 30] [--steps 100]
Prints a table and writes benchmarks/results/checkpoint.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table, write_results
from quality import prepared_default_split

EPOCHS = 4
MB = 1e6  # upload rates in MB/s (10**6 bytes): what network figures are quoted in


def generation_bytes(folder: Path) -> int:
    """Return the bytes of the newest generation in a checkpoint folder (its best.npz included)."""
    from model_lib import checkpoints

    newest = folder / f"gen-{checkpoints.generation_numbers(folder)[0]:06d}"
    return sum(p.stat().st_size for p in newest.iterdir())


def gpu_step_seconds() -> float | None:
    """Return the H100 step time of the default model (benchmarks/models_jax.py), None if not measured."""
    path = RESULTS / "models_jax_h100.json"
    if not path.is_file():
        return None
    run = next((r for r in json.loads(path.read_text())["runs"] if r["recipe"] == "ngram_glove default"), None)
    if run is None:
        return None
    steps = run["epochs_run"] * -(-18000 // run["batch"])
    return float(run["train_seconds"]) / steps


def measured(data, seconds: float, steps: int, step_seconds: float) -> dict:
    from model_lib.config import TrainConfig
    from model_lib.training import run

    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(TrainConfig(), epochs=EPOCHS, checkpoint_seconds=seconds, checkpoint_steps=steps)
        result = run(config, data, checkpoint_dir=folder, verbose=0)
        size = generation_bytes(Path(folder))
    per_save = (result.checkpoint_seconds - result.checkpoint_final_seconds) / max(1, result.checkpoints_saved)
    interval = seconds if seconds else steps * step_seconds
    return {
        "checkpoint_seconds": seconds,
        "checkpoint_steps": steps,
        "train_seconds": round(result.train_seconds, 2),
        "generations": result.checkpoints_saved,
        "epochs_seconds": round(result.epochs_seconds, 2),
        "generations_per_minute": round(60 * result.checkpoints_saved / result.epochs_seconds, 2),
        "generation_mb": round(size / MB, 1),
        "upload_mb_per_s": round(result.checkpoints_saved * size / MB / result.epochs_seconds, 2),
        "wait_per_save_s": round(per_save, 3),
        "checkpoint_share": round(result.checkpoint_seconds / result.epochs_seconds, 4),
        "lost_on_kill_max_s": round(interval + step_seconds + result.checkpoint_final_seconds, 1),
    }


def main() -> None:
    from model_lib.config import TrainConfig
    from model_lib.training import effective_hyperparameters, run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0], help="checkpoint_seconds values to try")
    parser.add_argument("--steps", type=int, nargs="*", default=[100], help="checkpoint_steps values to try (by steps alone)")
    args = parser.parse_args()
    default = TrainConfig().checkpoint_seconds
    data = prepared_default_split()[0]

    run(dataclasses.replace(TrainConfig(), epochs=1), data, verbose=0)  # warm-up: first-run costs (tracing) excluded
    baseline = run(dataclasses.replace(TrainConfig(), epochs=EPOCHS), data, verbose=0)
    steps_per_epoch = -(-round(len(data.x_train) * 0.9) // effective_hyperparameters(TrainConfig())["batch_size"])
    step_seconds = baseline.train_seconds / (steps_per_epoch * EPOCHS)
    print(
        f"no checkpoints: {baseline.train_seconds:.1f} s for {steps_per_epoch * EPOCHS} steps ({step_seconds * 1000:.0f} ms/step)"
    )
    rows = []
    for seconds in sorted(set(args.seconds) | {default}):
        rows.append(measured(data, seconds, 0, step_seconds))
        print(rows[-1], flush=True)
    for steps in args.steps:
        rows.append(measured(data, 0.0, steps, step_seconds))
        print(rows[-1], flush=True)
    print(table(rows, list(rows[0])))
    at_default = next(r for r in rows if r["checkpoint_seconds"] == default)
    figures = {"runs": rows, "epochs": EPOCHS, "default_checkpoint_seconds": default, "steps_per_epoch": steps_per_epoch}
    figures["no_checkpoint_train_seconds"] = round(baseline.train_seconds, 2)
    figures["step_seconds"] = round(step_seconds, 4)
    gpu = gpu_step_seconds()
    if gpu is not None:
        generation = at_default["generation_mb"]
        figures["gpu_estimate"] = {
            "step_seconds": round(gpu, 5),
            "default_upload_mb_per_s": round(generation / default, 2),
            **{f"steps_{steps}_upload_mb_per_s": round(generation / (steps * gpu), 1) for steps in args.steps},
        }
        print(f"on an H100 ({gpu * 1000:.1f} ms/step): {figures['gpu_estimate']}")
    print(
        f"default checkpoint_seconds={default:g}: {at_default['upload_mb_per_s']} MB/s (target <= 2), "
        f"{at_default['lost_on_kill_max_s']} s lost at most (<= 60), {at_default['checkpoint_share']:.2%} of training (<= 2%)"
    )
    print(f"wrote {write_results('checkpoint', figures)}")


if __name__ == "__main__":
    main()
