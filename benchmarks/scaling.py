"""Data-parallel training throughput: samples/s of one job on 1 and on 2 local hosts (Keras 3 on
JAX, the real toolkit and entry point per host, hosts 127.0.0.1 and 127.0.0.2, see
model_lib.sagemaker.local), and, on a GPU machine, the default model's throughput by batch size.

On a machine with few cores (2 here) both hosts share the same cores: the 2-host figure measures
the overhead of data parallelism (a gradient all-reduce per step over loopback, two processes
competing for the cores), not a speed-up. A speed-up needs hosts with their own cores or GPUs.

    python benchmarks/scaling.py                 # CPU: 1 vs 2 local hosts (~3 min on 2 cores)
    python benchmarks/scaling.py --gpu           # GPU machine, JAX: batch 256..4096 + one full default run
Prints a table and writes benchmarks/results/scaling.json (scaling_gpu.json with --gpu).

The --gpu mode has not been run: no GPU machine was lent to the session that wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

REPO = Path(__file__).resolve().parents[1]
# Small enough for 2 cores, large enough that a step is more than the all-reduce: 2,400 reviews of
# 200 ids, the default model with 200,003 n-gram buckets.
CPU_RUN = {"model": "ngram_glove", "epochs": 2, "batch_size": 64, "learning_rate": 0.01, "ngram_buckets": 200003, "patience": 5}
GPU_BATCH_SIZES = (256, 512, 1024, 2048, 4096)


def synthetic_prepared(folder: Path, reviews: int = 3000, length: int = 200, vocab: int = 5000) -> Path:
    """Write the four prepare outputs for random reviews whose label depends on a few ids; return the folder."""
    import numpy as np

    from model_lib.prepared import save_split
    from model_lib.text import Vocabulary

    rng = np.random.default_rng(0)
    ids = rng.integers(2, vocab + 2, size=(reviews, length), dtype=np.int32)
    labels = (np.isin(ids[:, :20], np.arange(2, 200)).sum(axis=1) > 2).astype(np.int8)
    cut = reviews * 4 // 5
    folder.mkdir(parents=True, exist_ok=True)
    save_split(folder / "train", ids[:cut], labels[:cut])
    save_split(folder / "test", ids[cut:], labels[cut:])
    Vocabulary([f"w{i}" for i in range(vocab)]).save(folder / "vocab.txt")
    np.save(folder / "embeddings.npy", rng.normal(0, 0.3, size=(vocab + 2, 50)).astype(np.float32))
    return folder


def cpu_scaling() -> dict[str, object]:
    """Return samples/s on 1 and 2 local hosts (the coordinator's training seconds, compile included)."""
    from model_lib.config import TrainConfig
    from model_lib.sagemaker.local import run_local

    rows = []
    with tempfile.TemporaryDirectory() as work:
        prepared = synthetic_prepared(Path(work) / "prepared")
        for hosts in (1, 2):
            base = Path(work) / f"job-{hosts}"
            started = time.perf_counter()
            result = run_local(TrainConfig(**CPU_RUN), prepared=prepared, base_dir=base, source_dir=REPO / "entry_point",
                               extra_env={"KERAS_BACKEND": "jax"}, instance_count=hosts)  # fmt: skip
            if result.exit_code != 0:
                raise SystemExit(f"{hosts} host(s): job failed: {result.failure}")
            summary = json.loads((base / "model" / "metrics.json").read_text())
            fit_rows = round(2400 * 0.9)  # the training split less the validation slice
            samples = fit_rows * summary["epochs_run"]
            rows.append({
                "hosts": hosts,
                "train_seconds": summary["train_seconds"],
                "samples_per_second": round(samples / summary["train_seconds"], 1),
                "job_seconds": round(time.perf_counter() - started, 1),
            })  # fmt: skip
    print(table(rows, ["hosts", "train_seconds", "samples_per_second", "job_seconds"]))
    note = (
        f"{os.cpu_count()} cores shared by all hosts: the 2-host figure is the overhead of data parallelism "
        "(all-reduce over loopback, two processes on the same cores), not a speed-up"
    )
    print(note)
    return {"run": CPU_RUN, "rows": rows, "note": note}


def gpu_sweep() -> dict[str, object]:
    """Return the default model's samples/s on the JAX backend per batch size, and a full default run's time.

    Run with KERAS_BACKEND=jax on a GPU machine (not run yet: see the module docstring).
    """
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"--gpu needs KERAS_BACKEND=jax, got {keras.backend.backend()!r}")
    import dataclasses

    from quality import prepared_default_split

    from model_lib.config import TrainConfig
    from model_lib.training import run

    data = prepared_default_split()[0]
    rows = []
    for batch in GPU_BATCH_SIZES:
        result = run(TrainConfig(epochs=2, batch_size=batch, patience=5), data, verbose=0)
        samples = len(data.y_train) * 0.9 * len(result.history)
        rows.append({"batch_size": batch, "train_seconds": round(result.train_seconds, 1),
                     "samples_per_second": round(samples / result.train_seconds)})  # fmt: skip
    full = run(TrainConfig(), data, verbose=0)
    print(table(rows, ["batch_size", "train_seconds", "samples_per_second"]))
    print(f"full default run: {full.train_seconds:.1f} s, {len(full.history)} epochs")
    return {"rows": rows, "default_run": {"train_seconds": round(full.train_seconds, 1), "epochs": len(full.history),
            "hyperparameters": dataclasses.asdict(TrainConfig())}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the GPU sweep (KERAS_BACKEND=jax on a GPU machine)")
    args = parser.parse_args()
    if args.gpu:
        print(f"wrote {write_results('scaling_gpu', gpu_sweep())}")
    else:
        print(f"wrote {write_results('scaling', cpu_scaling())}")


if __name__ == "__main__":
    main()
