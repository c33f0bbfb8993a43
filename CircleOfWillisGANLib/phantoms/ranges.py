"""Checking the population ranges of a phantom configuration before any phantom is drawn from them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import InputError

POSITIVE = ("scale",)                              # a zero scale leaves no vessels
NON_NEGATIVE = ("length", "sigma", "thickness", "separation", "level", "gain", "texture", "amplitude", "drop",
                "tortuosity", "rotation")


def check_ranges(config: Any) -> None:
    """Raise InputError unless every (low, high) range of `config` holds finite numbers with low <= high, sizes
    are not negative, scales are positive and probabilities lie in [0, 1]."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name.endswith("probability"):
            _check_number(f.name, value, 0.0, 1.0)
        elif f.name == "rotation_deg":
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise InputError(f"phantom setting rotation_deg must be three maximum angles (x, y, z), got {value!r}")
            for angle in value:
                _check_number(f.name, angle, 0.0, 180.0)
        elif f.name == "tip_position_mm":
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise InputError(f"phantom setting tip_position_mm must be three (low, high) ranges, got {value!r}")
            for pair in value:
                _check_pair(f.name, pair, -math.inf)
        else:
            lowest = 0.0 if any(word in f.name for word in NON_NEGATIVE + POSITIVE) else -math.inf
            low, _ = _check_pair(f.name, value, lowest)
            if f.name in POSITIVE and low <= 0:
                raise InputError(f"phantom setting {f.name} must be positive, got {value!r}")


def _check_pair(name: str, value: Any, lowest: float) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"phantom setting {name} must be a (low, high) range, got {value!r}")
    low, high = (_check_number(name, v, lowest, math.inf) for v in value)
    if low > high:
        raise InputError(f"phantom setting {name} has low {low:g} above high {high:g}: give (low, high)")
    return low, high


def _check_number(name: str, value: Any, lowest: float, highest: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not lowest <= number <= highest:
        bounds = f"from {lowest:g} to {highest:g}" if math.isfinite(highest) else f"of at least {lowest:g}"
        raise InputError(f"phantom setting {name} needs finite numbers {bounds}, got {value!r}")
    return number
