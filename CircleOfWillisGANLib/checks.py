"""Checking the numbers a user passes to the library: whole numbers and finite numbers within bounds."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np

from .errors import InputError

MAX_WORKERS_PER_CPU = 4  # --workers above this many per CPU is refused (phantoms and prepare)


def whole_number(value: Any, name: str, minimum: int = 0) -> int:
    """`value` as an int when it is an integer (not a bool) of at least `minimum`, else an InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def finite_number(value: Any, name: str, low: Optional[float] = None, high: Optional[float] = None,
                  above_low: bool = False) -> float:
    """`value` as a float when it is a finite real number within [low, high] (above `low` if `above_low`),
    else an InputError naming it and the bounds."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    number = float(value) if ok else math.nan
    if low is not None and (number < low or above_low and number == low) or high is not None and number > high:
        ok = False
    if not ok or not math.isfinite(number):
        raise InputError(f"{name} must be a finite number{_bounds(low, high, above_low)}, got {value!r}")
    return number


def _bounds(low: Optional[float], high: Optional[float], above_low: bool) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}" + (f" (above {low:g})" if above_low else "")
    if low is not None:
        return f" above {low:g}" if above_low else f" of at least {low:g}"
    return f" of at most {high:g}" if high is not None else ""


def check_workers(workers: int) -> None:
    """Refuse a worker count below 1 or above 4 per CPU, where more processes only slow a run and use up memory."""
    limit = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers < 1:
        raise InputError(f"--workers {workers} is invalid: use 1 or more")
    if workers > limit:
        raise InputError(f"--workers {workers} is too many: this machine has {os.cpu_count() or 1} CPUs, so use at "
                         f"most {limit} ({MAX_WORKERS_PER_CPU} per CPU)")
