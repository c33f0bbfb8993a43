"""Circle of Willis variants: the prevalence table, its overrides, and sampling with dependencies.

Probabilities are population prevalences per subject (sources in docs/phantoms.md). Pairs of sides are
sampled jointly (a marginal per side plus the probability of both), and the dependencies between segments
are honoured without changing the marginals: a fetal PCA keeps its Pcom; an absent A1 keeps the Acom; a
third A2 and a duplicated Acom need an Acom.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class VariantPrevalence:
    """Probability of each variant in the population; the defaults are the documented table."""

    pcom_absent_left: float = 0.43
    pcom_absent_right: float = 0.43
    pcom_absent_both: float = 0.27
    fetal_pca_left: float = 0.11
    fetal_pca_right: float = 0.11
    fetal_pca_bilateral: float = 0.03
    p1_absent_given_fetal: float = 0.30
    a1_hypoplastic_left: float = 0.04
    a1_hypoplastic_right: float = 0.04
    a1_absent_given_hypoplastic: float = 0.40
    acom_absent: float = 0.08
    acom_duplicated: float = 0.006
    third_a2: float = 0.05
    sca_present: float = 0.95

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"variant probability {f.name}={value!r} is not in [0, 1]: give a probability")
        _check_pair("pcom_absent", self.pcom_absent_left, self.pcom_absent_right, "pcom_absent_both", self.pcom_absent_both)
        _check_pair("fetal_pca", self.fetal_pca_left, self.fetal_pca_right, "fetal_pca_bilateral", self.fetal_pca_bilateral)
        non_fetal = 1.0 - self.fetal_pca_left - self.fetal_pca_right + self.fetal_pca_bilateral
        for side in ("left", "right"):
            if getattr(self, f"pcom_absent_{side}") > 1.0 - getattr(self, f"fetal_pca_{side}") + 1e-9:
                raise InputError(f"pcom_absent_{side}={getattr(self, f'pcom_absent_{side}')} + fetal_pca_{side}="
                                 f"{getattr(self, f'fetal_pca_{side}')} exceed 1, but a fetal PCA needs its Pcom: "
                                 "lower one of them")
        if self.pcom_absent_both > non_fetal + 1e-9:
            raise InputError(f"pcom_absent_both={self.pcom_absent_both} exceeds {non_fetal:.4g}, the share of subjects "
                             f"without a fetal PCA (a fetal PCA keeps its Pcom): lower it to {non_fetal:.4g} or less")
        rates = self.pcom_absence_rates()
        if not all(-1e-9 <= r <= 1.0 + 1e-9 for r in rates) or rates[0] + rates[1] - rates[2] > 1.0 + 1e-9:
            raise InputError(f"pcom_absent_left={self.pcom_absent_left}, pcom_absent_right={self.pcom_absent_right} and "
                             f"pcom_absent_both={self.pcom_absent_both} cannot all hold beside these fetal PCA rates "
                             "(a fetal PCA keeps its Pcom): lower pcom_absent_both or the fetal_pca rates")
        if self.acom_absent > 1.0 - self._p_any_a1_absent() + 1e-9:
            most = 1.0 - self._p_any_a1_absent()
            raise InputError(f"acom_absent={self.acom_absent} is too high for the absent-A1 rate (an absent A1 needs "
                             f"the Acom): lower it to {most:.4g} or less")
        for name in ("third_a2", "acom_duplicated"):
            if getattr(self, name) > 1.0 - self.acom_absent + 1e-9:
                raise InputError(f"{name}={getattr(self, name)} needs an Acom but exceeds 1 - acom_absent = "
                                 f"{1.0 - self.acom_absent:.4g}: lower it to that or less")

    def pcom_absence_rates(self) -> Tuple[float, float, float, float, float]:
        """How likely each Pcom is absent where it may be (not on a fetal side), so that the overall frequencies are
        the table's: (left, right, both) when neither PCA is fetal, and (left, right) when only the other side is.
        Each side keeps one rate for both situations where the joint allows it."""
        neither = 1.0 - self.fetal_pca_left - self.fetal_pca_right + self.fetal_pca_bilateral
        both = _ratio(self.pcom_absent_both, neither)
        sides = []
        for side, other in (("left", "right"), ("right", "left")):
            absent = getattr(self, f"pcom_absent_{side}")
            other_only = getattr(self, f"fetal_pca_{other}") - self.fetal_pca_bilateral
            lowest = max(both, (absent - other_only) / neither) if neither > 0 else both
            common = absent / (neither + other_only) if neither + other_only > 0 else 0.0
            sides.append((absent, other_only, lowest, max(common, lowest)))
        chosen = [s[3] for s in sides] if neither > 0 else [both, both]  # no subject without a fetal PCA: unused
        if chosen[0] + chosen[1] - both > 1.0:  # too many absences among subjects without a fetal PCA
            chosen = [s[2] for s in sides]
        other_fetal = [(absent - neither * x) / other_only if other_only > 0 else x
                       for (absent, other_only, _, _), x in zip(sides, chosen)]
        return chosen[0], chosen[1], both, other_fetal[0], other_fetal[1]

    def _p_any_a1_absent(self) -> float:
        q = self.a1_absent_given_hypoplastic
        return 1.0 - (1.0 - q * self.a1_hypoplastic_left) * (1.0 - q * self.a1_hypoplastic_right)

    def as_dict(self) -> Dict[str, float]:
        """The table as {name: probability}."""
        return {k: float(v) for k, v in asdict(self).items()}

    def with_overrides(self, overrides: Mapping[str, float]) -> "VariantPrevalence":
        """A copy with some probabilities replaced; unknown names are an InputError listing the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown variant {', '.join(unknown)}: use one of {', '.join(sorted(known))}")
        bad = sorted(k for k, v in overrides.items() if isinstance(v, bool) or not isinstance(v, (int, float)))
        if bad:
            raise InputError(f"variant {', '.join(bad)} must be a probability (a number from 0 to 1), got "
                             f"{', '.join(repr(overrides[k]) for k in bad)}")
        return replace(self, **{k: float(v) for k, v in overrides.items()})


def _check_pair(name: str, left: float, right: float, both_name: str, both: float) -> None:
    """Both sides together can be no likelier than either side alone, nor less likely than their overlap must be."""
    low, high = max(0.0, left + right - 1.0), min(left, right)
    if both > high + 1e-9 or both < low - 1e-9:
        allowed = f"{low:.4g}" if high - low < 1e-9 else f"from {low:.4g} to {high:.4g}"
        raise InputError(f"{both_name}={both} is inconsistent with {name}_left={left} and {name}_right={right}: "
                         f"it must lie between max(0, left + right - 1) and min(left, right); set it too (e.g. "
                         f"--variant {both_name}={high:.4g}; allowed: {allowed})")


FORCEABLE = ("complete", "fetal_pca_left", "fetal_pca_right", "fetal_pca_bilateral", "pcom_absent_left",
             "pcom_absent_right", "pcom_absent_both", "p1_absent_left", "p1_absent_right", "a1_hypoplastic_left",
             "a1_hypoplastic_right", "a1_absent_left", "a1_absent_right", "acom_absent", "acom_duplicated", "third_a2")


@dataclass
class Variants:
    """The variants of one subject, side by side; `topcow()` gives the expected TopCoW vectors."""

    pcom_absent_left: bool = False
    pcom_absent_right: bool = False
    fetal_pca_left: bool = False
    fetal_pca_right: bool = False
    p1_absent_left: bool = False
    p1_absent_right: bool = False
    a1_hypoplastic_left: bool = False
    a1_hypoplastic_right: bool = False
    a1_absent_left: bool = False
    a1_absent_right: bool = False
    acom_absent: bool = False
    acom_duplicated: bool = False
    third_a2: bool = False
    sca_left: bool = True
    sca_right: bool = True

    def topcow(self) -> Dict[str, List[int]]:
        """Expected TopCoW vectors: anterior [L-A1, Acom, 3rd-A2, R-A1], posterior [L-Pcom, L-P1, R-P1, R-Pcom]."""
        return {"anterior": [int(not self.a1_absent_left), int(not self.acom_absent), int(self.third_a2),
                             int(not self.a1_absent_right)],
                "posterior": [int(not self.pcom_absent_left), int(not self.p1_absent_left),
                              int(not self.p1_absent_right), int(not self.pcom_absent_right)]}

    def as_dict(self) -> Dict[str, bool]:
        """Every flag by name."""
        return {k: bool(v) for k, v in asdict(self).items()}


def _pair(u: float, left: float, right: float, both: float) -> Tuple[bool, bool]:
    """Two correlated events with these marginals and joint probability, from one uniform draw `u`."""
    if u < both:
        return True, True
    if u < left:
        return True, False
    if u < left + right - both:
        return False, True
    return False, False


def _ratio(p: float, q: float) -> float:
    return 0.0 if q <= 0 else min(1.0, p / q)


def sample_variants(rng: np.random.Generator, table: VariantPrevalence = VariantPrevalence(),
                    force: Sequence[str] = ()) -> Variants:
    """Draw one subject's variants so that each event's overall frequency is the table's; `force` makes events certain."""
    t = table
    v = Variants()
    v.fetal_pca_left, v.fetal_pca_right = _pair(rng.random(), t.fetal_pca_left, t.fetal_pca_right,
                                                t.fetal_pca_bilateral)
    left, right, both, left_other_fetal, right_other_fetal = t.pcom_absence_rates()
    u = rng.random()
    pcom_left, pcom_right = _pair(u, left, right, both)
    if v.fetal_pca_right and left_other_fetal != left:
        pcom_left = u < left_other_fetal
    if v.fetal_pca_left and right_other_fetal != right:
        pcom_right = u < right_other_fetal
    v.pcom_absent_left = pcom_left and not v.fetal_pca_left
    v.pcom_absent_right = pcom_right and not v.fetal_pca_right
    v.p1_absent_left = v.fetal_pca_left and rng.random() < t.p1_absent_given_fetal
    v.p1_absent_right = v.fetal_pca_right and rng.random() < t.p1_absent_given_fetal
    v.a1_hypoplastic_left = rng.random() < t.a1_hypoplastic_left
    v.a1_hypoplastic_right = rng.random() < t.a1_hypoplastic_right
    v.a1_absent_left = v.a1_hypoplastic_left and rng.random() < t.a1_absent_given_hypoplastic
    v.a1_absent_right = v.a1_hypoplastic_right and rng.random() < t.a1_absent_given_hypoplastic
    if v.a1_absent_left and v.a1_absent_right:  # nothing would feed the anterior circulation: keep one, at random
        v.a1_absent_left, v.a1_absent_right = (False, True) if u < 0.5 else (True, False)
    any_a1_absent = v.a1_absent_left or v.a1_absent_right
    acom_draw = rng.random() < _ratio(t.acom_absent, 1.0 - t._p_any_a1_absent())
    v.acom_absent = acom_draw and not any_a1_absent
    acom_present_share = 1.0 - t.acom_absent
    third = rng.random() < _ratio(t.third_a2, acom_present_share)
    duplicated = rng.random() < _ratio(t.acom_duplicated, acom_present_share)
    v.third_a2 = third and not v.acom_absent
    v.acom_duplicated = duplicated and not v.acom_absent
    v.sca_left = rng.random() < t.sca_present
    v.sca_right = rng.random() < t.sca_present
    for name in _forcing_order(force):
        _force(v, name)
    _draw_forced_shares(rng, t, v, force)
    return v


def _draw_forced_shares(rng: np.random.Generator, t: VariantPrevalence, v: Variants, force: Sequence[str]) -> None:
    """A forced fetal PCA lacks its P1, and a forced hypoplastic A1 its A1, as often as sampled ones do (the table's
    conditional shares), unless that absence is itself forced or another forced variant rules it out."""
    forced = set(force)
    for side, other in (("left", "right"), ("right", "left")):
        if {f"fetal_pca_{side}", "fetal_pca_bilateral"} & forced and f"p1_absent_{side}" not in forced:
            setattr(v, f"p1_absent_{side}", bool(rng.random() < t.p1_absent_given_fetal))
        if f"a1_hypoplastic_{side}" in forced and not {f"a1_absent_{side}", "acom_absent"} & forced:
            absent = bool(rng.random() < t.a1_absent_given_hypoplastic) and not getattr(v, f"a1_absent_{other}")
            setattr(v, f"a1_absent_{side}", absent)
            v.acom_absent = v.acom_absent and not absent


COMPLETE_CIRCLE_FLAGS = ("pcom_absent_left", "pcom_absent_right", "fetal_pca_left", "fetal_pca_right",
                         "p1_absent_left", "p1_absent_right", "a1_hypoplastic_left", "a1_hypoplastic_right",
                         "a1_absent_left", "a1_absent_right", "acom_absent", "acom_duplicated", "third_a2")


def _forcing_order(force: Sequence[str]) -> List[str]:
    """`complete` first, as the base the other forced variants change."""
    return sorted(force, key=lambda name: name != "complete")


def check_forced(force: Sequence[str]) -> None:
    """Raise InputError unless the forced variants can all hold in one subject (an absent Acom cannot also be
    duplicated, for example); `complete` is the base the others change."""
    v = Variants()
    for name in _forcing_order(force):
        _force(v, name)
    if v.a1_absent_left and v.a1_absent_right:
        raise InputError("an absent A1 on both sides leaves nothing to feed the anterior cerebral arteries: force "
                         "a1_absent_left or a1_absent_right, not both")
    broken = [name for name in dict.fromkeys(force) if name != "complete" and not _holds(v, name)]
    if broken:
        raise InputError(f"the forced variants {', '.join(dict.fromkeys(force))} cannot all hold in one subject "
                         f"({', '.join(broken)} would be undone): force only variants that can coexist")


def _holds(v: Variants, name: str) -> bool:
    if name == "fetal_pca_bilateral":
        return v.fetal_pca_left and v.fetal_pca_right
    if name == "pcom_absent_both":
        return v.pcom_absent_left and v.pcom_absent_right
    return bool(getattr(v, name))


def _force(v: Variants, name: str) -> None:
    """Make one event true and restore the dependencies it implies."""
    if name not in FORCEABLE:
        raise InputError(f"cannot force {name!r}: use one of {', '.join(FORCEABLE)}")
    if name == "complete":
        for flag in COMPLETE_CIRCLE_FLAGS:
            setattr(v, flag, False)
        return
    if name == "fetal_pca_bilateral":
        _force(v, "fetal_pca_left")
        _force(v, "fetal_pca_right")
        return
    if name == "pcom_absent_both":
        _force(v, "pcom_absent_left")
        _force(v, "pcom_absent_right")
        return
    setattr(v, name, True)
    side = name.rsplit("_", 1)[-1]
    if name.startswith("fetal_pca_"):
        setattr(v, f"pcom_absent_{side}", False)
    elif name.startswith("p1_absent_"):
        setattr(v, f"fetal_pca_{side}", True)
        setattr(v, f"pcom_absent_{side}", False)
    elif name.startswith("pcom_absent_"):
        setattr(v, f"fetal_pca_{side}", False)
        setattr(v, f"p1_absent_{side}", False)
    elif name.startswith("a1_absent_"):
        setattr(v, f"a1_hypoplastic_{side}", True)
        v.acom_absent = False
    elif name == "acom_absent":
        v.a1_absent_left = v.a1_absent_right = False
        v.third_a2 = v.acom_duplicated = False
    elif name in ("third_a2", "acom_duplicated"):
        v.acom_absent = False


def parse_overrides(items: Iterable[str]) -> Dict[str, float]:
    """Parse ["name=0.5", ...] from the command line into {name: probability}."""
    out: Dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"cannot read variant override {item!r}: write it as NAME=PROBABILITY, "
                             "e.g. fetal_pca_left=0.5")
    return out


def load_table(path: Union[str, Path], base: Optional[VariantPrevalence] = None) -> VariantPrevalence:
    """A prevalence table from a JSON object {name: probability} applied over `base` (default: the documented table)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"variant table {path} does not exist: check the path") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read variant table {path} ({exc}): give a JSON object of name: probability") from exc
    if not isinstance(data, dict):
        raise InputError(f"variant table {path} must be a JSON object of name: probability")
    return (base or VariantPrevalence()).with_overrides(data)
