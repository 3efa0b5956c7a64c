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
    "PreparedData": "model_lib.training",
    "TrainResult": "model_lib.training",
    "load_prepared": "model_lib.training",
    "load_model": "model_lib.training",
    "predict": "model_lib.training",
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
