"""The ``tune:`` section of params.yaml: which ``train:`` keys a tuning job searches, how, and for what.

Why a section of params.yaml and not a file of its own: the ranges sit next to the values they
replace, ``dvc params diff --all`` shows a change to either, and ``model-lib tune --apply-best``
writes the winner into the same file's ``train:``. No DVC stage lists ``tune`` among its params, so
editing the ranges never makes ``dvc repro`` rerun a stage.

```yaml
tune:
  objective: val_loss        # val_loss (minimised) | val_accuracy | val_auc (maximised)
  strategy: Bayesian         # Bayesian | Random | Hyperband | Grid
  max_jobs: 12               # trials in all (Grid: the grid's size, leave it out)
  max_parallel_jobs: 3
  early_stopping: "Off"      # "Off" | Auto (Bayesian and Random only)
  ranges:
    learning_rate: {min: 0.0005, max: 0.01, scaling: Logarithmic}
    dropout: {min: 0.0, max: 0.5}
    batch_size: {values: [32, 64, 128]}
```

An integer key of ``train:`` gets an integer range, a float key a continuous one; ``values`` makes a
categorical choice. Every problem is reported before anything is sent, naming the key, as for
``train:`` itself: a range's ends and every choice must be values ``train:`` accepts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from model_lib.config import TrainConfig, from_mapping, read_params
from model_lib.epoch_lines import OBJECTIVES
from model_lib.errors import ConfigError

SECTION = "tune"
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
EARLY_STOPPING = ("Off", "Auto")
# SageMaker's bounds on a tuning job's resource limits.
MAX_TRAINING_JOBS = 750
MAX_PARALLEL_JOBS = 100
# Keys whose effect the validation metrics cannot see, or that change what they measure: a search
# over them would rank noise (seed, threads, checkpoint_steps, checkpoint_seconds), rank trials on different validation
# slices (validation_split), or not see the NB-SVM views, which are fitted after training and are not
# in the validation metrics.
UNTUNABLE = {
    "seed": "a search over seeds picks noise",
    "validation_split": "each value scores trials on another validation slice",
    "threads": "it changes speed, not the model",
    "checkpoint_steps": "it changes how often state is saved, not the model",
    "checkpoint_seconds": "it changes how often state is saved, not the model",
    "nb_view_weight": "the NB-SVM views are fitted after training: the validation metrics do not see them",
    "nb_crop_view_weight": "the NB-SVM views are fitted after training: the validation metrics do not see them",
    "nb_view_reviews": "the NB-SVM views are fitted after training: the validation metrics do not see them",
}
_RANGE_KEYS = {"min", "max", "scaling", "values"}
_KEYS = ("objective", "strategy", "max_jobs", "max_parallel_jobs", "early_stopping", "min_epochs", "ranges")


@dataclasses.dataclass(frozen=True)
class ParameterRange:
    """One tuned ``train:`` key: ``kind`` "Integer" or "Continuous" (``low``..``high``, ``scaling``), or
    "Categorical" (``values``)."""

    name: str
    kind: str
    low: float = 0.0  # an int for an Integer range
    high: float = 0.0
    scaling: str = "Auto"
    values: tuple[Any, ...] = ()

    def size(self) -> int | None:
        """Return how many values the range holds (None: continuous)."""
        if self.kind == "Categorical":
            return len(self.values)
        return int(self.high) - int(self.low) + 1 if self.kind == "Integer" else None


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A tuning job's search: the objective, strategy, limits, early stopping and the ranges."""

    ranges: tuple[ParameterRange, ...]
    objective: str = "val_loss"
    strategy: str = "Bayesian"
    max_jobs: int | None = 10  # None: Grid's size
    max_parallel_jobs: int = 2
    early_stopping: str = "Off"
    min_epochs: int = 1  # Hyperband: the fewest epochs a trial gets before it may be stopped

    @property
    def objective_type(self) -> str:
        """Return "Minimize" or "Maximize"."""
        return OBJECTIVES[self.objective]

    @property
    def trials(self) -> int:
        """Return how many trials the job runs at most (Grid: the grid's size)."""
        if self.max_jobs is not None:
            return self.max_jobs
        return math.prod(r.size() or 1 for r in self.ranges)

    def better(self, a: float, b: float) -> bool:
        """Return whether objective value ``a`` beats ``b``."""
        return a < b if self.objective_type == "Minimize" else a > b


def _train_fields() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base_kind(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _check_value(train: Mapping[str, Any], name: str, value: Any, where: str) -> Any:
    """Return ``value`` as ``train.<name>`` takes it (the other keys as in ``train``).

    Raises:
        ConfigError: naming ``where`` and what ``train:`` expects.
    """
    try:
        config = from_mapping(TrainConfig, {**train, name: value}, "train")
    except ConfigError as exc:
        message = str(exc)
        prefix = f"train.{name}: "
        detail = message[len(prefix) :] if message.startswith(prefix) else message
        raise ConfigError(f"{where}: {detail}") from None
    return getattr(config, name)


def _parse_range(name: str, raw: Any, train: Mapping[str, Any], where: str) -> ParameterRange:
    """Return the range of ``train.<name>`` that ``raw`` describes.

    Raises:
        ConfigError: naming ``where`` for a key that is not a train key, not tunable, a range of the
            wrong shape, an end or choice ``train:`` refuses, or a scaling its range cannot have.
    """
    fields = _train_fields()
    if name not in fields:
        raise ConfigError(f"{where}: unknown key {name!r}; expected a key of train: ({', '.join(sorted(fields))})")
    if name in UNTUNABLE:
        raise ConfigError(f"{where}: {name} cannot be tuned: {UNTUNABLE[name]}")
    if not isinstance(raw, Mapping) or not raw or set(raw) - _RANGE_KEYS:
        extra = sorted(set(raw) - _RANGE_KEYS, key=str) if isinstance(raw, Mapping) else []
        shown = f"unknown key {extra[0]!r}; " if extra else ""
        raise ConfigError(f"{where}: {shown}expected {{min: A, max: B[, scaling: S]}} or {{values: [A, B, ...]}}")
    kind = _base_kind(fields[name])
    if "values" in raw:
        return _categorical(name, raw, train, where)
    if set(raw) - {"min", "max", "scaling"} or not {"min", "max"} <= set(raw):
        raise ConfigError(f"{where}: expected both min and max (or values: [...])")
    if kind not in (int, float):
        raise ConfigError(f"{where}: {name} is not a number: give its choices as values: [...]")
    low = _check_value(train, name, raw["min"], f"{where}.min")
    high = _check_value(train, name, raw["max"], f"{where}.max")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: expected min < max, got min {raw['min']!r}, max {raw['max']!r}")
    scaling = raw.get("scaling", "Auto")
    if scaling not in SCALINGS:
        raise ConfigError(f"{where}.scaling: expected one of {', '.join(SCALINGS)}, got {scaling!r}")
    if scaling == "Logarithmic" and low <= 0:
        raise ConfigError(f"{where}.scaling: Logarithmic needs min > 0, got {low!r}")
    if scaling == "ReverseLogarithmic" and (kind is int or not 0 <= low < high < 1):
        raise ConfigError(f"{where}.scaling: ReverseLogarithmic needs a continuous range within [0, 1), got {low!r}..{high!r}")
    return ParameterRange(name, "Integer" if kind is int else "Continuous", low, high, scaling)


def _categorical(name: str, raw: Mapping[str, Any], train: Mapping[str, Any], where: str) -> ParameterRange:
    values = raw["values"]
    if set(raw) != {"values"} or not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected values: [A, B, ...] alone, a non-empty list")
    checked = tuple(_check_value(train, name, value, f"{where}.values[{i}]") for i, value in enumerate(values))
    if len(set(checked)) != len(checked):
        raise ConfigError(f"{where}.values: each choice once, got {values!r}")
    if len(checked) > 30:  # SageMaker's limit on a categorical range
        raise ConfigError(f"{where}.values: at most 30 choices, got {len(checked)}")
    return ParameterRange(name, "Categorical", values=checked)


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str, where: str) -> str:
    value = raw.get(key, default)
    if key == "early_stopping" and value is False:  # YAML 1.1 reads a bare Off as false
        value = "Off"
    if value not in choices:
        raise ConfigError(f"{where}.{key}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _count(raw: Mapping[str, Any], key: str, default: int | None, most: int, where: str) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{where}.{key}: expected an integer from 1 to {most}, got {value!r}")
    return value


def parse_tune(raw: Any, train: Mapping[str, Any], where: str = "params.yaml: tune") -> TuneConfig:
    """Return the tuning job ``raw`` (the ``tune:`` section) describes, for the ``train:`` values ``train``.

    Raises:
        ConfigError: for every problem, naming its key: an unknown key, a range ``train:`` would not
            accept, a strategy with a range, limit or early stopping SageMaker refuses for it.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with ranges: (model-lib tune; README: Tuning)")
    unknown = sorted((key for key in raw if key not in _KEYS), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(_KEYS)}")
    ranges_raw = raw.get("ranges")
    if not isinstance(ranges_raw, Mapping) or not ranges_raw:
        raise ConfigError(f"{where}.ranges: expected a mapping of train: keys to ranges, got {ranges_raw!r}")
    ranges = tuple(_parse_range(str(name), spec, train, f"{where}.ranges.{name}") for name, spec in ranges_raw.items())
    strategy = _choice(raw, "strategy", STRATEGIES, "Bayesian", where)
    objective = _choice(raw, "objective", tuple(OBJECTIVES), "val_loss", where)
    config = TuneConfig(
        ranges=ranges,
        objective=objective,
        strategy=strategy,
        max_jobs=_count(raw, "max_jobs", None if strategy == "Grid" else 10, MAX_TRAINING_JOBS, where),
        max_parallel_jobs=_count(raw, "max_parallel_jobs", 2, MAX_PARALLEL_JOBS, where) or 2,
        early_stopping=_choice(raw, "early_stopping", EARLY_STOPPING, "Off", where),
        min_epochs=_count(raw, "min_epochs", 1, 10_000, where) or 1,
    )
    _check_strategy(config, raw, train, where)
    return config


def _check_strategy(config: TuneConfig, raw: Mapping[str, Any], train: Mapping[str, Any], where: str) -> None:
    """Refuse what SageMaker refuses for the strategy (Grid, Hyperband, early stopping, limits)."""
    if config.strategy == "Grid":
        continuous = [r.name for r in config.ranges if r.kind == "Continuous"]
        if continuous:
            raise ConfigError(f"{where}.ranges.{continuous[0]}: Grid searches only values: [...] and integer ranges")
        if "max_jobs" in raw:
            raise ConfigError(f"{where}.max_jobs: Grid runs every combination ({config.trials}); leave max_jobs out")
        if config.trials > MAX_TRAINING_JOBS:
            raise ConfigError(
                f"{where}.ranges: the grid has {config.trials} combinations; SageMaker runs at most {MAX_TRAINING_JOBS}"
            )
    if config.early_stopping == "Auto" and config.strategy not in ("Bayesian", "Random"):
        raise ConfigError(f"{where}.early_stopping: Auto works with Bayesian and Random only, not {config.strategy}")
    if "min_epochs" in raw and config.strategy != "Hyperband":
        raise ConfigError(f"{where}.min_epochs: only Hyperband stops trials by epochs")
    if config.strategy == "Hyperband":
        epochs = [r.name for r in config.ranges if r.name == "epochs"]
        if epochs:
            raise ConfigError(f"{where}.ranges.epochs: Hyperband decides how many epochs each trial gets; set train.epochs")
        most = max_epochs(train)
        if config.min_epochs > most:
            raise ConfigError(f"{where}.min_epochs: expected at most train.epochs ({most}), got {config.min_epochs}")
    if config.max_parallel_jobs > config.trials:
        raise ConfigError(
            f"{where}.max_parallel_jobs: expected at most the {config.trials} trials, got {config.max_parallel_jobs}"
        )


def max_epochs(train: Mapping[str, Any]) -> int:
    """Return the epochs a trial of ``train`` runs at most (its ``epochs``, else the model's default)."""
    from model_lib.config import effective_hyperparameters

    return int(effective_hyperparameters(from_mapping(TrainConfig, train, "train"))["epochs"])


def load_tune(
    params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None
) -> tuple[TuneConfig, dict[str, Any], TrainConfig]:
    """Return the ``tune:`` section of ``params_path``, its ``train:`` values (``overrides`` applied)
    and their TrainConfig.

    Raises:
        ConfigError: if either section is missing or invalid (see :func:`parse_tune`), naming the key.
    """
    params = read_params(params_path)
    for section in ("train", SECTION):
        if section not in params:
            example = "ranges: {learning_rate: {min: 0.0005, max: 0.01, scaling: Logarithmic}}"
            hint = f" (e.g. tune: {{{example}}}; README: Tuning)" if section == SECTION else ""
            raise ConfigError(f"{params_path}: missing section {section!r}{hint}")
    train = {**(params["train"] or {}), **(overrides or {})}
    config = from_mapping(TrainConfig, train, f"{params_path}: train")  # the base config must be valid itself
    return parse_tune(params[SECTION], train, f"{params_path}: {SECTION}"), train, config


def sampled(config: TuneConfig, seed: int) -> Iterator[dict[str, Any]]:
    """Yield the trials' tuned values for a local search: Grid's combinations in order, else up to
    ``max_jobs`` random draws (Bayesian and Hyperband are searched at random here: only SageMaker
    has their models), without repeating a combination of a finite space."""
    if config.strategy == "Grid":
        spaces = [_finite_values(r) for r in config.ranges]
        for combination in itertools.product(*spaces):
            yield dict(zip((r.name for r in config.ranges), combination))
        return
    rng = random.Random(seed)
    seen: set[tuple[Any, ...]] = set()
    finite = all(r.kind != "Continuous" for r in config.ranges)
    space = math.prod(r.size() or 1 for r in config.ranges) if finite else None
    for _ in range(config.trials):
        if space is not None and len(seen) >= space:
            return
        draw = {r.name: _draw(r, rng) for r in config.ranges}
        while space is not None and tuple(draw.values()) in seen:
            draw = {r.name: _draw(r, rng) for r in config.ranges}
        seen.add(tuple(draw.values()))
        yield draw


def _finite_values(r: ParameterRange) -> list[Any]:
    return list(r.values) if r.kind == "Categorical" else list(range(int(r.low), int(r.high) + 1))


def _draw(r: ParameterRange, rng: random.Random) -> Any:
    if r.kind == "Categorical":
        return rng.choice(r.values)
    low, high = float(r.low), float(r.high)
    if r.scaling == "Logarithmic":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    elif r.scaling == "ReverseLogarithmic":
        value = 1 - math.exp(rng.uniform(math.log(1 - high), math.log(1 - low)))
    else:
        value = rng.uniform(low, high)
    if r.kind == "Integer":
        return min(int(r.high), max(int(r.low), round(value)))
    return float(f"{value:.6g}")


def apply_values(params_path: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``values`` into ``params_path``'s ``train:`` (comments and the rest of the file kept, as
    ``dvc exp run -S`` does); return the ``train:`` values written, checked as ``train:`` is.

    Raises:
        ConfigError: if a value is not one ``train:`` accepts (the file is then left as it was).
    """
    from ruamel.yaml import YAML

    from model_lib._io import atomic_path

    path = Path(params_path)
    current = dict(read_params(path).get("train") or {})
    merged = {**current, **values}
    from_mapping(TrainConfig, merged, f"{path}: train")  # nothing is written that train: would refuse
    yaml = YAML()  # round-trip: keeps comments, order and quoting
    yaml.preserve_quotes = True
    document = yaml.load(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        document["train"][key] = value
    with atomic_path(path, suffix=".yaml") as tmp, open(tmp, "w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
    return merged


__all__ = [
    "EARLY_STOPPING",
    "SCALINGS",
    "STRATEGIES",
    "UNTUNABLE",
    "ParameterRange",
    "TuneConfig",
    "apply_values",
    "load_tune",
    "max_epochs",
    "parse_tune",
    "sampled",
]
