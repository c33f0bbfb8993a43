"""Settings of a visual Turing test session, validated once where they are made."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import InputError

DISPLAYS = ("mip", "slices", "surface", "all")
CALLS = ("real", "fake")
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)
RANDOMISED_RANGE = (0.4, 0.6)
MAX_CASES = 999
RATER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
POOLED = "pooled"  # the name of the results' row of all readings together, so no rater may use it


@dataclass
class SessionConfig:
    """How a session is drawn and shown. `real_fraction` None means randomised within 40-60%."""

    n_cases: int = 60
    real_fraction: Optional[float] = 0.5
    display: str = "all"
    time_limit_s: Optional[float] = None
    allow_back: bool = False
    seed: int = 0
    raters: List[str] = field(default_factory=list)

    def validate(self) -> "SessionConfig":
        """Raise an InputError naming the bad setting and its allowed range; return self."""
        if not 2 <= int(self.n_cases) <= MAX_CASES:
            raise InputError(f"number of cases {self.n_cases} is out of range: use 2 to {MAX_CASES} (60 is typical)")
        if self.real_fraction is not None and not 0.0 < float(self.real_fraction) < 1.0:
            raise InputError(f"real fraction {self.real_fraction} must lie strictly between 0 and 1 "
                             "(0.5, the default, for 50:50), or be 'randomised' for a share drawn within 40-60%")
        if self.display not in DISPLAYS:
            raise InputError(f"unknown display {self.display!r}: use one of {', '.join(DISPLAYS)}")
        if self.time_limit_s is not None and not 0 < float(self.time_limit_s) < math.inf:
            raise InputError(f"time limit {self.time_limit_s} s must be a positive number of seconds, or unset for no limit")
        if self.real_fraction is not None and not 1 <= round(float(self.real_fraction) * int(self.n_cases)) < int(self.n_cases):
            raise InputError(f"real fraction {self.real_fraction} of {self.n_cases} cases gives "
                             f"{round(float(self.real_fraction) * int(self.n_cases))} real cases: a session needs at least "
                             "one real and one generated case; choose a fraction nearer 0.5 or more cases")
        if int(self.seed) < 0:
            raise InputError(f"seed {self.seed} must be 0 or more")
        for rater in self.raters:
            check_rater_id(rater)
        check_distinct_rater_ids(self.raters)
        return self

    def n_real_range(self) -> Tuple[int, int]:
        """The smallest and largest number of real cases this configuration can draw (randomised: the counts inside
        40-60% of the cases, or the middle count when none is, as with 3 cases)."""
        n = int(self.n_cases)
        if self.real_fraction is None:
            lo, hi = math.ceil(RANDOMISED_RANGE[0] * n - 1e-9), math.floor(RANDOMISED_RANGE[1] * n + 1e-9)
            if lo > hi:
                lo = hi = round(n / 2)
        else:
            lo = hi = round(float(self.real_fraction) * n)
        return max(1, lo), min(n - 1, hi)


def check_rater_id(rater: str) -> str:
    """A rater id names a journal file, so it is 1-40 letters, digits, '-' or '_'; and a row of the results, so it
    is not 'pooled', the row of all readings together."""
    if not isinstance(rater, str) or not RATER_ID_PATTERN.match(rater):
        raise InputError(f"rater id {rater!r} is not usable: use 1-40 letters, digits, '-' or '_' "
                         "(for example reader01), starting with a letter or digit")
    if rater.lower() == POOLED:
        raise InputError(f"rater id {rater!r} is reserved for the results' row of all readings pooled: use another id "
                         "(for example reader01)")
    return rater


def parse_rater_ids(text: str, source: str = "--raters", blank_means_any: bool = True) -> List[str]:
    """The rater ids of a comma- (or semicolon-) separated list; blank text means any id where `blank_means_any`,
    but text that names no id (',,') is refused, as it would silently open the session to any id."""
    raters = [r.strip() for r in text.replace(";", ",").split(",") if r.strip()]
    if not raters and (text.strip() or not blank_means_any):
        raise InputError(f"{source} {text!r} names no rater id: list ids separated by commas (e.g. reader01,reader02), "
                         "or give none at all to let any id open the session")
    return raters


def check_distinct_rater_ids(raters: List[str]) -> None:
    """Refuse two ids that are the same ignoring case: each names a journal file, and on a case-insensitive file
    system (Windows, macOS) 'r1' and 'R1' would be one file written by two raters."""
    seen: Dict[str, str] = {}
    for rater in raters:
        earlier = seen.get(rater.casefold())
        if earlier == rater:
            raise InputError(f"rater id {rater!r} is given twice: give each rater a distinct id")
        if earlier is not None:
            raise InputError(f"rater ids {earlier!r} and {rater!r} differ only in case, so they would share one journal "
                             "file on Windows or macOS: give each rater an id that differs in more than case")
        seen[rater.casefold()] = rater


def check_call(call: str) -> str:
    """Normalise a rater's call to 'real' or 'fake'."""
    value = str(call).strip().lower()
    if value not in CALLS:
        raise InputError(f"answer {call!r} is not a call: answer 'real' or 'fake'")
    return value


def check_confidence(confidence: int) -> int:
    """Confidence is an integer rating from 1 (guess) to 5 (certain)."""
    try:
        value = int(confidence) if not isinstance(confidence, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise InputError(f"confidence {confidence!r} is not a number: rate from 1 (guess) to 5 (certain)")
    if value not in CONFIDENCE_LEVELS or value != confidence:
        raise InputError(f"confidence {confidence} is out of range: rate from 1 (guess) to 5 (certain)")
    return value
