"""The population ranges of a phantom configuration: checked before any phantom is drawn, and drawn from."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from ..checks import finite_number
from ..errors import InputError

POSITIVE = ("scale",)                              # a zero scale leaves no vessels
NON_NEGATIVE = ("length", "sigma", "thickness", "separation", "level", "gain", "texture", "amplitude", "drop",
                "tortuosity", "rotation")


def check_ranges(config: Any) -> None:
    """Raise InputError unless every (low, high) range of `config` holds finite numbers with low <= high, sizes
    are not negative, scales are positive and probabilities lie in [0, 1]."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        setting = f"phantom setting {f.name}"
        if f.name.endswith("probability"):
            finite_number(value, setting, 0.0, 1.0)
        elif f.name == "rotation_deg":
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise InputError(f"{setting} must be three maximum angles (x, y, z), got {value!r}")
            for angle in value:
                finite_number(angle, setting, 0.0, 180.0)
        elif f.name == "tip_position_mm":
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise InputError(f"{setting} must be three (low, high) ranges, got {value!r}")
            for pair in value:
                _check_pair(setting, pair, None)
        else:
            lowest = 0.0 if any(word in f.name for word in NON_NEGATIVE + POSITIVE) else None
            low, _ = _check_pair(setting, value, lowest)
            if f.name in POSITIVE and low <= 0:
                raise InputError(f"{setting} must be positive, got {value!r}")


def _check_pair(setting: str, value: Any, lowest: Optional[float]) -> Tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"{setting} must be a (low, high) range, got {value!r}")
    low, high = (finite_number(v, setting, lowest) for v in value)
    if low > high:
        raise InputError(f"{setting} has low {low:g} above high {high:g}: give (low, high)")
    return low, high


def draw(rng: np.random.Generator, low_high: Tuple[float, float]) -> float:
    """One value drawn uniformly from a (low, high) population range."""
    return float(rng.uniform(low_high[0], low_high[1]))
