"""model_lib: IMDB sentiment with GloVe in Keras, run the same way by DVC, MLflow and SageMaker.

The public API is below. Names load lazily, so ``import model_lib`` (and ``model-lib --help``) does
not import TensorFlow; the first use of a Keras-backed name does.

Example:
    >>> import model_lib
    >>> reviews = model_lib.load_reviews("bundled")
    >>> model = model_lib.load_model("models/model.keras")
    >>> model_lib.predict(model, ["A wonderful film."])
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "model_lib.errors",
    "DataError": "model_lib.errors",
    "EmbeddingError": "model_lib.errors",
    "ModelLibError": "model_lib.errors",
    "SageMakerEnvironmentError": "model_lib.errors",
    "IngestConfig": "model_lib.config",
    "PrepareConfig": "model_lib.config",
    "TrainConfig": "model_lib.config",
    "EvaluateConfig": "model_lib.config",
    "load_section": "model_lib.config",
    "Reviews": "model_lib.data",
    "load_reviews": "model_lib.data",
    "split_indices": "model_lib.data",
    "Glove": "model_lib.embeddings",
    "load_glove": "model_lib.embeddings",
    "embedding_matrix": "model_lib.embeddings",
    "Vocabulary": "model_lib.text",
    "build_model": "model_lib.models",
    "PreparedData": "model_lib.prepared",
    "Split": "model_lib.prepared",
    "load_split": "model_lib.prepared",
    "TrainResult": "model_lib.training",
    "TrainingInterrupted": "model_lib.errors",
    "load_prepared": "model_lib.prepared",
    "load_model": "model_lib.inference",
    "predict": "model_lib.inference",
    "evaluate": "model_lib.evaluation",
}

__all__ = sorted([*_EXPORTS, "train", "__version__"])


def train(config: Any, data: Any, **kwargs: Any) -> Any:
    """Train ``config.model`` on prepared ``data``; return a :class:`TrainResult`.

    The same function the DVC stage and the SageMaker entry point call
    (:func:`model_lib.training.run`); keyword arguments pass through (checkpoint_dir, tracker).
    """
    from model_lib.training import run

    return run(config, data, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def _register_layers() -> None:
    # Importing these registers our layers (TextEncoder, HashedNgrams, ...) with Keras.
    importlib.import_module("model_lib.inference")


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers our layers as soon as Keras has been imported, so that ``import model_lib`` then
    ``keras.models.load_model("models/model.keras")`` works without importing TensorFlow here
    (Keras itself only imports ``keras*`` modules when it meets an unknown class)."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            try:
                _register_layers()
            except Exception:  # never break `import keras`; model_lib.load_model still registers them
                logging.getLogger(__name__).debug("could not register model_lib layers with Keras", exc_info=True)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _no_layer_registration_on_keras_import() -> None:
    """Remove the hook above: the `model-lib` command imports what it needs itself, and a DVC stage
    must import only the modules it depends on (dvc.yaml)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterAfterKeras)]


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
