"""NB-SVM view fit (issue 24, the train stage's peak RSS): the peak RSS and seconds of
`model_lib.assemble.views` alone, on the training reviews of a prepare run, and a check that the
fitted views are the same bits as those of another run (of another commit, say).

The peak is the kernel's high-water mark of this process (VmHWM), reset just before the fit
(`/proc/self/clear_refs`): exact, native allocations included, where tracemalloc sees only
Python's. The data are loaded and the sample padded before the reset, as the train stage holds
them already.

    python benchmarks/view_fit.py --prepared /tmp/model-lib-scale/250000/data/prepared [--reviews 20000]
        [--save views.npz] [--compare views.npz]

`--save` writes every fitted view's weights, squares and intercept; `--compare` exits 1 unless
those of this run are bitwise equal to the saved ones. It prints a table; it writes no results
file (the train stage's figures are benchmarks/scale.py's).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table


def rss_bytes(field: str) -> int:
    """Return the ``field`` (VmRSS, VmHWM) of /proc/self/status in bytes."""
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status: no {field}")
    return int(match.group(1)) * 1024


def reset_peak() -> None:
    """Reset this process's high-water mark to its present RSS (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


def view_arrays(fitted: list[Any]) -> dict[str, np.ndarray]:
    """Return the arrays that make up the fitted (view, weight) pairs, named by view number."""
    arrays = {}
    for number, (view, weight) in enumerate(fitted, start=1):
        arrays[f"view{number}_weights"] = view.weights
        arrays[f"view{number}_squares"] = view.squares
        arrays[f"view{number}_intercept"] = np.array([view.intercept], dtype=np.float64)
        arrays[f"view{number}_mix"] = np.array([weight], dtype=np.float64)
    return arrays


def differences(ours: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> list[str]:
    """Return the names of the arrays whose dtype, shape or bytes differ (or that one side lacks)."""
    names = sorted(set(ours) | set(saved))
    return [
        name
        for name in names
        if name not in ours
        or name not in saved
        or ours[name].dtype != saved[name].dtype
        or ours[name].shape != saved[name].shape
        or ours[name].tobytes() != saved[name].tobytes()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prepared", type=Path, required=True, help="a prepare run's folder (train/, test/, vocab.txt, embeddings.npy)"
    )
    parser.add_argument("--reviews", type=int, default=20_000, help="train.nb_view_reviews (default: 20000)")
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs: seeds the crops (default: 1, as scale.py)")
    parser.add_argument("--save", type=Path, help="write the fitted views here (.npz)")
    parser.add_argument("--compare", type=Path, help="exit 1 unless the views equal those saved here bitwise")
    args = parser.parse_args()

    from model_lib.assemble import view_rows, views
    from model_lib.config import TrainConfig, effective_hyperparameters
    from model_lib.prepared import channel_paths, load_prepared

    paths = channel_paths(args.prepared)
    data = load_prepared(paths["train"], paths["test"], paths["vocab"], paths["embeddings"])
    config = TrainConfig(epochs=args.epochs, nb_view_reviews=args.reviews)
    hp = effective_hyperparameters(config)
    rows = view_rows(len(data.train), config.nb_view_reviews, config.seed)
    sample = (data.train.padded(rows), data.train.labels[rows])  # what views() would make, before the reset

    before = rss_bytes("VmRSS")
    reset_peak()
    began = time.perf_counter()
    fitted = views(data, config, hp, sample)
    seconds = time.perf_counter() - began
    peak = rss_bytes("VmHWM")

    print(
        table(
            [
                {
                    "reviews": f"{len(rows):,}",
                    "views": len(fitted),
                    "seconds": f"{seconds:.1f}",
                    "RSS before MB": f"{before / 1e6:,.0f}",
                    "peak RSS MB": f"{peak / 1e6:,.0f}",
                    "peak - before MB": f"{(peak - before) / 1e6:,.0f}",
                }
            ],
            ["reviews", "views", "seconds", "RSS before MB", "peak RSS MB", "peak - before MB"],
        )
    )
    arrays = view_arrays(fitted)
    if args.save:
        np.savez(args.save, **arrays)
        print(f"wrote {args.save}")
    if args.compare:
        with np.load(args.compare) as archive:
            differ = differences(arrays, {name: archive[name] for name in archive.files})
        print(
            f"views {'differ from' if differ else 'bitwise equal to'} {args.compare}"
            + (f": {', '.join(differ)}" if differ else "")
        )
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
