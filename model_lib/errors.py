"""Errors a user can cause. Each names where, what, and what was expected.

The CLI turns these into one line on stderr and exit code 2; anything else keeps its traceback.
"""

from __future__ import annotations


class ModelLibError(ValueError):
    """Base class for errors caused by bad input (files, params, hyperparameters)."""


class ConfigError(ModelLibError):
    """A params file, section, key or value is missing or wrong."""


class DataError(ModelLibError):
    """A review source, split or encoded file is missing, malformed or empty."""


class EmbeddingError(ModelLibError):
    """A GloVe file or embedding matrix is missing, malformed or does not fit the vocabulary."""


class SageMakerEnvironmentError(ModelLibError):
    """The SageMaker container contract (SM_* variables, channels, hyperparameters) is not met."""
