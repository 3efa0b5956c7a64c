"""The model builders on the JAX backend (no TensorFlow): seed_cnn's training recipe on 3 seeds (ours
and the original lr=0.01 / batch 1024 / 3 epochs) and the default model's epoch time, on prepared
data exported as one .npz (x_train, y_train, x_test, y_test, matrix).

    KERAS_BACKEND=jax python benchmarks/models_jax.py PREPARED.npz [--out results/models_jax.json]

Used on a lent GPU machine, where TensorFlow is not installed; runs on CPU JAX too (slowly).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from model_lib import registry
from model_lib.models import build_model
from model_lib.prepared import Split, SplitRows


def split_validation(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    fit, val = train_test_split(np.arange(len(y)), test_size=0.1, random_state=seed, stratify=y)
    return np.sort(fit), np.sort(val)


def train(data, name: str, seed: int, lr: float, batch: int, epochs: int, patience: int | None, clipnorm=1.0, **hp):
    keras.utils.set_random_seed(seed)
    fit, val = split_validation(data["y_train"], seed)
    fit_x, fit_y = data["x_train"][fit], data["y_train"][fit]
    fitted = SplitRows(Split.from_padded(fit_x, fit_y), np.arange(len(fit_y)))
    extra = registry.get(name).fitted_arguments({"ngram_order": 3, **hp}, fitted, data["matrix"].shape[0])
    model = build_model(name, data["matrix"], max_length=data["x_train"].shape[1], **hp, **extra)
    model.compile(keras.optimizers.Adam(lr, clipnorm=clipnorm), "binary_crossentropy", metrics=["accuracy"])
    callbacks = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)] if patience else []
    started = time.perf_counter()
    history = model.fit(
        data["x_train"][fit],
        data["y_train"][fit].astype("float32"),
        batch_size=batch,
        epochs=epochs,
        validation_data=(data["x_train"][val], data["y_train"][val].astype("float32")),
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - started
    _loss, accuracy = model.evaluate(data["x_test"], data["y_test"].astype("float32"), batch_size=1024, verbose=0)
    return {
        "model": name,
        "seed": seed,
        "lr": lr,
        "batch": batch,
        "epochs_run": len(history.history["loss"]),
        "test_accuracy": float(accuracy),
        "train_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "models_jax.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    with np.load(args.prepared) as archive:
        data = {k: archive[k] for k in archive.files}
    ours = registry.get("seed_cnn").defaults
    rows = []
    for seed in args.seeds:
        rows.append(
            {"recipe": "seed_cnn ours", **train(data, "seed_cnn", seed, ours.learning_rate, ours.batch_size, ours.epochs, 2)}
        )
        print(rows[-1], flush=True)
        rows.append({"recipe": "seed_cnn original", **train(data, "seed_cnn", seed, 0.01, 1024, 3, None)})
        print(rows[-1], flush=True)
    default = registry.get("ngram_glove").defaults
    rows.append(
        {
            "recipe": "ngram_glove default",
            **train(
                data,
                "ngram_glove",
                42,
                default.learning_rate,
                default.batch_size,
                default.epochs,
                2,
                clipnorm=None,
                dropout=default.dropout,
                ngram_buckets=2097143,
            ),
        }
    )
    print(rows[-1], flush=True)
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
    except ImportError:
        devices = ["(jax not installed)"]
    result = {"backend": keras.backend.backend(), "devices": devices, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
