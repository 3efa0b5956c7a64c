"""The MLflow model of a training run, as an MLflow "model from code" file.

MLflow copies this file into the logged model and runs it when the model loads, so the model is
code plus a Keras SavedModel export, never a pickle, and loading it needs TensorFlow but not
model_lib (a ``.keras`` file would need our registered layers importable). ``tracking.logged_model`` imports it
only for its path and column name; importing it sets MLflow's current model-from-code, which
MLflow sets again each time it runs this file.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

COLUMN = "review"


class ReviewClassifier(PythonModel):
    """P(positive) for raw review texts, from the raw-string model exported as a SavedModel."""

    def load_context(self, context: PythonModelContext) -> None:
        import tensorflow as tf

        # The loaded object owns the variables its `serve` function reads: keep it alive.
        self._saved_model = tf.saved_model.load(context.artifacts["saved_model"])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Return a one-column frame ``probability`` for a frame with a ``review`` column (MLflow
        turns a list of texts into that frame, by the logged signature).

        Raises:
            ValueError: if the input has no ``review`` column.
        """
        import tensorflow as tf

        if COLUMN not in model_input.columns:
            raise ValueError(f"input has columns {list(model_input.columns)}; expected a {COLUMN!r} column")
        texts = model_input[COLUMN].astype(str).tolist()
        if not texts:
            return pd.DataFrame({"probability": np.zeros((0,), dtype=np.float32)})
        probabilities = self._saved_model.serve(tf.reshape(tf.constant(texts), [-1, 1]))
        return pd.DataFrame({"probability": np.asarray(probabilities, dtype=np.float32).reshape(-1)})


mlflow.models.set_model(ReviewClassifier())
