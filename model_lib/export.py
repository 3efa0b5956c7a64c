"""The model users get: the trained id-sequence model wrapped to take raw review strings, saved as
one ``.keras`` file (vocabulary and standardisation inside).

The wrapper's string ops are TensorFlow's, so the raw-string model is always built, saved and
exported on the TensorFlow backend. A model trained on another backend (JAX: multi-device and
multi-host training) is handed over as a ``.keras`` file of the id-sequence model, whose layers are
backend-agnostic, to a TensorFlow-backend child process (``python -m model_lib.export``): Keras
fixes its backend when it is imported, so one process cannot hold both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras

from model_lib._io import atomic_path
from model_lib.text import Vocabulary

EXPORT_TIMEOUT_SECONDS = 1800  # a few seconds for the default model: far beyond means something hangs
# Keras writes the wall clock into a .keras file (metadata.json's date_saved, the weights entry's zip
# timestamp) and Python's id() of each object layers share (config.json's shared_object_id, a memory
# address): the same model saved twice would differ, and so would dvc.lock. The dates become this one,
# the earliest a zip entry can hold (what reproducible-build tools use), the ids 1, 2, ... in order.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FIXED_DATE_SAVED = "1980-01-01@00:00:00"  # Keras' own format for date_saved
ENTRY_MODE = 0o644 << 16  # a zip entry's Unix mode, the same for every entry
# Keras stores its entries uncompressed; the weights of the shipped model deflate to about 70%
# (sorted index words, n-gram tables of few distinct values), for ~0.2 s more per load. Level 1:
# level 6 saves another 2% for twice the time.
COMPRESSION, COMPRESS_LEVEL = zipfile.ZIP_DEFLATED, 1


def raw_string_model(model: keras.Model, vocabulary: Vocabulary, max_length: int) -> keras.Model:
    """Return a model taking raw review strings, shape (batch, 1) like a one-column table, and
    returning P(positive) per review, shape (batch, 1)."""
    texts = keras.Input(shape=(1,), dtype="string", name="review")
    ids = vocabulary.encoder(max_length)(texts)
    return keras.Model(texts, model(ids), name=f"{model.name}_raw_text")


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` as a ``.keras`` file, atomically; the same model gives the same bytes every time
    (no date, no memory address inside: see :data:`FIXED_DATE`)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        _make_reproducible(Path(tmp))


def _make_reproducible(path: Path) -> None:
    """Rewrite the .keras zip at ``path`` with its entries in the same order, deflated
    (:data:`COMPRESSION`), each dated :data:`FIXED_DATE`, and its JSON entries through :func:`_stable_json`.

    Built in memory (Keras builds its weights entry in memory too), so that a failed write is one
    OSError on ``path`` itself: the caller's ``atomic_path`` names the model file.
    """
    rewritten = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for entry in source.infolist():
            fixed = zipfile.ZipInfo(entry.filename, date_time=FIXED_DATE)
            fixed.compress_type, fixed.external_attr = COMPRESSION, ENTRY_MODE
            data = source.read(entry)
            target.writestr(fixed, _stable_json(data) if entry.filename.endswith(".json") else data, compresslevel=COMPRESS_LEVEL)
    path.write_bytes(rewritten.getvalue())


def _stable_json(raw: bytes) -> str:
    """Return the Keras JSON ``raw`` with ``date_saved`` :data:`FIXED_DATE_SAVED` and each distinct
    ``shared_object_id`` renumbered 1, 2, ... in the order the walk meets them (Keras only matches
    them with each other)."""
    numbers: dict[Any, int] = {}

    def stable(value: Any) -> Any:
        if isinstance(value, list):
            return [stable(item) for item in value]
        if not isinstance(value, dict):
            return value
        fixed = {key: stable(item) for key, item in value.items()}
        if "shared_object_id" in fixed:
            fixed["shared_object_id"] = numbers.setdefault(fixed["shared_object_id"], len(numbers) + 1)
        if "date_saved" in fixed:
            fixed["date_saved"] = FIXED_DATE_SAVED
        return fixed

    return json.dumps(stable(json.loads(raw)))


def _in_tensorflow(*args: str) -> None:
    """Run ``python -m model_lib.export *args`` on the TensorFlow backend.

    Raises:
        RuntimeError: if it fails (its stderr's tail in the message).
    """
    # No GPU for the child: the JAX parent holds most of its memory, and wrapping needs none.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("XLA_FLAGS", None)  # JAX's device settings mean nothing to TensorFlow
    try:
        command = [sys.executable, "-m", "model_lib.export", *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"export on the TensorFlow backend ({args[0]}): no end after {EXPORT_TIMEOUT_SECONDS} s") from None
    if result.returncode != 0:
        raise RuntimeError(
            f"export on the TensorFlow backend ({args[0]}) failed with exit {result.returncode}: {result.stderr[-2000:]}"
        )


def save_raw_string_model(model: keras.Model, vocabulary: Vocabulary, max_length: int, path: str | os.PathLike[str]) -> None:
    """Save the raw-string model of the id-sequence ``model`` as a ``.keras`` file at ``path``.

    On the TensorFlow backend this is ``save_model(raw_string_model(...))``; on another backend the
    id-sequence model goes to a TensorFlow-backend process as a ``.keras`` file, which wraps it.

    Raises:
        RuntimeError: if the TensorFlow-backend process fails.
    """
    if keras.backend.backend() == "tensorflow":
        save_model(raw_string_model(model, vocabulary, max_length), path)
        return
    with tempfile.TemporaryDirectory() as folder:
        core, vocab = Path(folder) / "core.keras", Path(folder) / "vocab.txt"
        model.save(core)
        vocabulary.save(vocab)
        _in_tensorflow("raw-model", str(core), str(vocab), str(max_length), str(path))


def write_saved_model(path: str | os.PathLike[str], target: str | os.PathLike[str], model: keras.Model | None = None) -> None:
    """Write the SavedModel export (endpoint ``serve``: strings (batch, 1) -> P(positive)) of the
    raw-string ``.keras`` model at ``path`` into the folder ``target`` (what the MLflow pyfunc loads).

    ``model`` is that model already loaded (TensorFlow backend only); on another backend a
    TensorFlow-backend process loads ``path``.

    Raises:
        RuntimeError: if the TensorFlow-backend process fails.
    """
    if keras.backend.backend() != "tensorflow":
        _in_tensorflow("saved-model", str(path), str(target))
        return
    import tensorflow as tf

    if model is None:
        from model_lib.inference import load_model

        model = load_model(path)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[tf.TensorSpec([None, 1], tf.string, name="review")])
    archive.write_out(str(target), verbose=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m model_lib.export raw-model CORE VOCAB MAX_LENGTH OUT`` or ``saved-model MODEL DIR``,
    on the TensorFlow backend; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m model_lib.export", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    raw = commands.add_parser("raw-model", help="wrap an id-sequence .keras model into the raw-string .keras model")
    raw.add_argument("core", type=Path)
    raw.add_argument("vocabulary", type=Path)
    raw.add_argument("max_length", type=int)
    raw.add_argument("out", type=Path)
    saved = commands.add_parser("saved-model", help="export a raw-string .keras model as a SavedModel")
    saved.add_argument("model", type=Path)
    saved.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        parser.error(f"needs KERAS_BACKEND=tensorflow, got {keras.backend.backend()!r}")
    if args.command == "raw-model":
        from model_lib.inference import load_model

        save_model(raw_string_model(load_model(args.core), Vocabulary.load(args.vocabulary), args.max_length), args.out)
    else:
        write_saved_model(args.model, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
