"""Numbers read from environment variables and flags, checked where they come in.

An environment variable is a door like a params key: a value we cannot use is refused with the
variable's name, the value and what was expected (docs/doors.md), never a ``float()`` traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from model_lib.errors import ConfigError


def check_seconds(value: float | str, where: str, *, positive: bool = False) -> float:
    """Return ``value`` as a finite number of seconds (>= 0, or > 0 with ``positive``).

    Raises:
        ConfigError: ``<where>: expected a number of seconds >= 0, got <value>`` (``> 0`` with ``positive``).
    """
    expected = f"a number of seconds {'>' if positive else '>='} 0"
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        shown = repr(value) if isinstance(value, str) else f"{value:g}"
        raise ConfigError(f"{where}: expected {expected}, got {shown}")
    return seconds


def seconds_from_env(name: str, default: float, *, positive: bool = False, environ: Mapping[str, str] | None = None) -> float:
    """Return the seconds in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ConfigError: naming the variable, for a value that is not a finite number of seconds.
    """
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    return check_seconds(raw, name, positive=positive) if raw else default


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def flag_from_env(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """Return the switch in environment variable ``name`` (``default`` when unset or empty); case and
    spaces are ignored.

    Raises:
        ConfigError: ``<name>: expected true or false, got <value>`` for any other word.
    """
    raw = (os.environ if environ is None else environ).get(name, "")
    word = raw.strip().lower()
    if not word:
        return default
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"{name}: expected true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}), got {raw!r}")
