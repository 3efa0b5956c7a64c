"""Where the bytes of the shipped model go, and what each byte buys: the size of
``models/model.keras`` (the raw-string model `make run` trains) and its test accuracy, beside
variants made from the same trained tables. Target: <= 40 MB at the default with test accuracy
>= 0.9172 at seed 42.

Variants, each measured on the prepared test split (data/prepared/test) by the same id model:
- as shipped: compact tables (only the n-grams some table uses, model_lib.models.CompactIds), float32,
  the .keras zip deflated;
- the same file stored (the zip uncompressed, as Keras writes it);
- the views' four tables at float16 (each value rounded to float16 and back: the accuracy is
  measured, the size is the stored file less 2 bytes per row of each view table, computed);
- the network alone, without the two NB-SVM views (saved and measured);
- ``--before PATH``: a model.keras of the layout before (full 4.2M-row tables, optimizer slots);
- ``--buckets N ...``: the default trained again with N hash buckets per n-gram order (fewer rows,
  more collisions), on the prepared data, saved and measured (about 3 minutes each on 2 cores).

    python benchmarks/model_size.py [--model models/model.keras] [--before OLD.keras] [--buckets 524287]
Prints a table and writes benchmarks/results/model_size.json. Run `make run` first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

MB = 1e6
VIEW_TABLES = ("view1_weights", "view1_squares", "view2_weights", "view2_squares")


def id_model(raw):
    """Return the id-sequence model inside the raw-string model ``raw``."""
    import keras

    return next(layer for layer in raw.layers if isinstance(layer, keras.Model))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    p = np.asarray(model.predict(x, batch_size=512, verbose=0)).reshape(-1)
    return round(float(((p >= 0.5) == (y == 1)).mean()), 4)


def stored_copy(path: Path, target: Path) -> Path:
    """Write ``path``'s zip entries uncompressed to ``target``; return it."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for entry in source.infolist():
            copy.writestr(entry.filename, source.read(entry))
    return target


def retrained(buckets: int, x: np.ndarray, y: np.ndarray) -> dict:
    """Return the size and test accuracy of the default model trained with ``buckets`` buckets."""
    import dataclasses

    from model_lib.config import TrainConfig
    from model_lib.export import save_model
    from model_lib.prepared import load_prepared
    from model_lib.training import run

    data = load_prepared("data/prepared/train", "data/prepared/test", "data/prepared/vocab.txt", "data/prepared/embeddings.npy")
    result = run(dataclasses.replace(TrainConfig(), ngram_buckets=buckets), data, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        save_model(result.raw_model, Path(folder) / "model.keras")
        size = (Path(folder) / "model.keras").stat().st_size
    return {"variant": f"trained with {buckets:,} buckets", "mb": round(size / MB, 1), "accuracy": accuracy(result.model, x, y)}


def main() -> None:
    import keras

    from model_lib.export import save_model
    from model_lib.inference import load_model
    from model_lib.prepared import load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--test", type=Path, default=Path("data/prepared/test"))
    parser.add_argument("--before", type=Path, default=None, help="a model.keras of the earlier layout, to compare")
    parser.add_argument("--buckets", type=int, nargs="*", default=[], help="ngram_buckets values to train and measure")
    args = parser.parse_args()
    test = load_split(args.test)
    x, y = test.padded(), test.labels
    shipped = id_model(load_model(args.model))
    rows = [
        {
            "variant": "as shipped (compact float32, deflated)",
            "mb": round(args.model.stat().st_size / MB, 1),
            "accuracy": accuracy(shipped, x, y),
        }
    ]
    with tempfile.TemporaryDirectory() as folder:
        stored = stored_copy(args.model, Path(folder) / "stored.keras").stat().st_size
        rows.append({"variant": "same, zip stored", "mb": round(stored / MB, 1), "accuracy": rows[0]["accuracy"]})
        view_rows = sum(len(shipped.get_layer(name).get_weights()[0]) for name in VIEW_TABLES)
        for name in VIEW_TABLES:
            layer = shipped.get_layer(name)
            layer.set_weights([layer.get_weights()[0].astype(np.float16).astype(np.float32)])
        rows.append(
            {
                "variant": "views' tables float16 (size computed)",
                "mb": round((stored - 2 * view_rows) / MB, 1),
                "accuracy": accuracy(shipped, x, y),
            }
        )
        shipped = id_model(load_model(args.model))
        alone = keras.Model(shipped.inputs, shipped.get_layer("p_positive").output, name="network_alone")
        save_model(alone, Path(folder) / "alone.keras")
        rows.append(
            {
                "variant": "network alone, no NB-SVM views",
                "mb": round((Path(folder) / "alone.keras").stat().st_size / MB, 1),
                "accuracy": accuracy(alone, x, y),
            }
        )
    for buckets in args.buckets:
        rows.append(retrained(buckets, x, y))
        print(rows[-1], flush=True)
    if args.before is not None:
        before = id_model(load_model(args.before))
        rows.append(
            {
                "variant": "before: full tables + optimizer slots",
                "mb": round(args.before.stat().st_size / MB, 1),
                "accuracy": accuracy(before, x, y),
            }
        )
    print(table(rows, ["variant", "mb", "accuracy"]))
    met = rows[0]["mb"] <= 40 and rows[0]["accuracy"] >= 0.9172
    print(
        f"as shipped: {rows[0]['mb']} MB, accuracy {rows[0]['accuracy']} (targets <= 40 MB, >= 0.9172): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"wrote {write_results('model_size', {'model': str(args.model), 'variants': rows})}")


if __name__ == "__main__":
    main()
