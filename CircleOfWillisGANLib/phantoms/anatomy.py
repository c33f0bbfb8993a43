"""The parametric Circle of Willis: landmarks, vessel centrelines with radii, and the subject's pose.

Built in a template frame of RAS millimetres with the origin at the basilar tip (x to the subject's right,
y anterior, z superior), with the sizes and junction geometry of docs/phantoms.md, then moved by the
subject's scale, rotation and translation (what rigid registration to a template leaves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import topcow
from .curves import arc_length, smooth_curve
from .ranges import check_ranges, draw
from .variants import Variants

UNLABELLED = 0


@dataclass
class Vessel:
    """One tube: centreline points (N, 3) in mm, radius per point, TopCoW label (0 = small unlabelled branch)."""

    name: str
    label: int
    points: np.ndarray
    radii: np.ndarray
    parent: Optional[int] = None
    slow_flow: float = 1.0
    speed: float = 1.0
    saturation: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_radius: float = math.inf  # a hypoplastic segment stays under 1 mm wide however the subject is scaled

    @property
    def length_mm(self) -> float:
        """Centreline length."""
        return float(arc_length(self.points)[-1])


@dataclass(frozen=True)
class AnatomyConfig:
    """Population ranges (uniform) of the subject-level anatomy; defaults calibrated on TopCoW MRA label maps."""

    ica_separation_mm: Tuple[float, float] = (28.0, 33.0)
    ica_terminus_anterior_mm: Tuple[float, float] = (11.0, 18.0)
    ica_terminus_height_mm: Tuple[float, float] = (0.0, 6.0)
    acom_anterior_of_termini_mm: Tuple[float, float] = (3.0, 7.0)
    acom_anterior_of_tip_mm: Tuple[float, float] = (15.0, 21.5)
    acom_length_mm: Tuple[float, float] = (1.0, 3.0)
    m1_length_mm: Tuple[float, float] = (16.0, 24.0)
    p1_length_mm: Tuple[float, float] = (5.5, 7.5)
    scale: Tuple[float, float] = (0.92, 1.08)
    rotation_deg: Tuple[float, float, float] = (5.0, 6.0, 4.0)
    tip_position_mm: Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]] = (
        (-2.0, 2.0), (-11.0, -6.0), (-5.0, -2.0))
    tortuosity_mm: Tuple[float, float] = (0.6, 2.2)
    radius_scale: Tuple[float, float] = (0.88, 1.12)

    def __post_init__(self) -> None:
        check_ranges(self)


class _Builder:
    def __init__(self, rng: np.random.Generator, tortuosity: float, radius_scale: float) -> None:
        self.rng = rng
        self.tortuosity = tortuosity
        self.radius_scale = radius_scale
        self.vessels: List[Vessel] = []

    def add(self, name: str, label: int, control: List[np.ndarray], r0: float, r1: float,
            parent: Optional[int] = None, tortuosity: Optional[float] = None, slow_flow: float = 1.0,
            speed: float = 1.0, max_radius: float = math.inf) -> int:
        amount = self.tortuosity if tortuosity is None else tortuosity
        points = smooth_curve(np.asarray(control, float), self.rng, amount)
        u = arc_length(points) / max(arc_length(points)[-1], 1e-9)
        radii = np.minimum(self.radius_scale * (r0 + (r1 - r0) * u), max_radius)
        self.vessels.append(Vessel(name, label, points, radii, parent, slow_flow, speed, max_radius=max_radius))
        return len(self.vessels) - 1

    def keep_off_midline(self, index: int, side: int, scale: float) -> None:
        """Move vessel `index` out from the midline (x = 0), on its side, wherever its points lie nearer than their
        clearance (`midline_clearance`), by a shift that is piecewise linear along the vessel (the upper concave
        envelope of the shortfall): the vessel keeps its bends, only tilted, and an end already clear of the midline
        stays where it joins its neighbour. Deterministic: the random stream is unchanged."""
        v = self.vessels[index]
        shortfall = np.maximum(midline_clearance(v.radii, scale) - side * v.points[:, 0], 0.0)
        v.points[:, 0] += side * upper_concave_envelope(arc_length(v.points), shortfall)

    def point(self, index: int, fraction: float) -> np.ndarray:
        """The centreline point at `fraction` of the arc length of vessel `index`."""
        v = self.vessels[index]
        s = arc_length(v.points)
        return np.array([np.interp(fraction * s[-1], s, v.points[:, k]) for k in range(3)])


def sample_landmarks(rng: np.random.Generator, cfg: AnatomyConfig) -> Dict[str, float]:
    """The subject's scalar anatomy parameters (mm, template frame), all recorded in the JSON."""
    terminus_y = draw(rng, cfg.ica_terminus_anterior_mm)
    return {
        "ica_half_separation": draw(rng, cfg.ica_separation_mm) / 2.0,
        "ica_terminus_y": terminus_y,
        "ica_terminus_z": draw(rng, cfg.ica_terminus_height_mm),
        # in front of the termini, but within the measured distances from the basilar tip however far forward they lie
        "acom_forward": float(np.clip(terminus_y + draw(rng, cfg.acom_anterior_of_termini_mm),
                                      *cfg.acom_anterior_of_tip_mm)) - terminus_y,
        "acom_rise": float(rng.uniform(-0.5, 3.0)),
        "acom_length": draw(rng, cfg.acom_length_mm),
        "a2_half_gap": float(rng.uniform(1.0, 2.0)),
        "m1_length": draw(rng, cfg.m1_length_mm),
        "m1_rise": float(rng.uniform(0.0, 5.0)),
        "p1_length": draw(rng, cfg.p1_length_mm),
        "p1_rise": float(rng.uniform(-0.5, 2.0)),
        "basilar_sway": float(rng.uniform(-3.0, 3.0)),
        "midbrain_half_width": float(rng.uniform(14.0, 18.0)),
        "tortuosity": draw(rng, cfg.tortuosity_mm),
        "radius_scale": draw(rng, cfg.radius_scale),
    }


HYPOPLASTIC_MAX_RADIUS = 0.49 * topcow.HYPOPLASTIC_WIDTH_MM  # mm: a hypoplastic A1 or a fetal PCA's thin P1 is under 1 mm wide
ACOM_ABSENT_GAP_MM = 1.6  # mm of tissue at least between the left and right ACA lumens when there is no Acom
R = {"basilar": 1.45, "ica": (2.15, 1.8), "m1": (1.6, 1.45), "m2": (1.1, 0.95), "a1": 1.1, "a2": (1.05, 0.95),
     "acom": (0.7, 0.85), "p1": 1.1, "p2": (1.05, 0.9), "pcom": (0.8, 1.0), "sca": (0.7, 0.6)}
"""Mean lumen radii (mm) before the subject's radius scale; calibrated on TopCoW label maps (docs/phantom-realism.md)."""
SPEED = {"ica": 3.0, "basilar": 1.2, "m1": 1.5}
"""Relative flow speed of the large trunks (others 1): faster blood saturates less per millimetre."""


def upper_concave_envelope(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least concave function of increasing `t` at or above `y` (its upper convex hull), at each `t`."""
    hull: List[int] = []
    for i in range(len(t)):
        while len(hull) >= 2 and ((y[hull[-1]] - y[hull[-2]]) * (t[i] - t[hull[-2]])
                                  <= (y[i] - y[hull[-2]]) * (t[hull[-1]] - t[hull[-2]])):
            hull.pop()  # the last vertex lies on or below the chord to point i
        hull.append(i)
    return np.interp(t, t[hull], y[hull])


def midline_clearance(radii: np.ndarray, scale: float) -> np.ndarray:
    """Least distance (template mm) from the midline of ACA points with lumen `radii` for ACOM_ABSENT_GAP_MM of tissue
    between the sides once `place` scales positions by `scale` but radii by its square root."""
    return np.asarray(radii) / math.sqrt(scale) + ACOM_ABSENT_GAP_MM / (2.0 * scale)


def build_vessels(rng: np.random.Generator, lm: Dict[str, float], v: Variants, scale: float) -> List[Vessel]:
    """All vessel centrelines of one subject in the template frame (origin at the basilar tip).

    `scale` is the pose's, which `place` applies later: without an Acom the ACAs keep their gap after it."""
    b = _Builder(rng, lm["tortuosity"], lm["radius_scale"])
    u = rng.uniform
    hs, yt, zt = lm["ica_half_separation"], lm["ica_terminus_y"], lm["ica_terminus_z"]
    ya, za = yt + lm["acom_forward"], zt + lm["acom_rise"]
    bilateral_fetal = v.fetal_pca_left and v.fetal_pca_right
    ba_r = R["basilar"] * (0.8 if bilateral_fetal else 1.0)
    sway = lm["basilar_sway"]
    ba = b.add("basilar", topcow.BA, [np.array([0.3 * sway, -5.0, -32.0]), np.array([sway, -3.5, -20.0]),
                                      np.array([0.6 * sway, -1.5, -9.0]), np.zeros(3)], ba_r * 1.08, ba_r,
               tortuosity=0.5, speed=SPEED["basilar"])
    tip = np.zeros(3)
    acom_ends: Dict[int, np.ndarray] = {}
    a1_radius = {1: R["a1"], -1: R["a1"]}
    for s, hyp in ((1, v.a1_hypoplastic_right), (-1, v.a1_hypoplastic_left)):
        if hyp:
            a1_radius[s] = float(u(0.35, 0.48))
            a1_radius[-s] = max(a1_radius[-s], 1.3)
    for s in (1, -1):
        left = s < 0
        ica_l, mca_l, aca_l = (topcow.L_ICA, topcow.L_MCA, topcow.L_ACA) if left else (topcow.R_ICA, topcow.R_MCA, topcow.R_ACA)
        pca_l, pcom_l = (topcow.L_PCA, topcow.L_PCOM) if left else (topcow.R_PCA, topcow.R_PCOM)
        side = "left" if left else "right"
        term = np.array([s * hs, yt, zt])
        genu = np.array([s * (hs - 3.5 + u(-1, 1)), yt + u(8, 12), zt - u(6, 9)])
        ica = b.add(f"ica_{side}", ica_l, [
            np.array([s * (hs - 4.5), yt - 12.0, zt - 20.0]), np.array([s * (hs - 5.5), yt - 3.0, zt - 14.5]),
            np.array([s * (hs - 5.0), yt + 6.0, zt - 12.0]), genu,
            np.array([s * (hs - 1.2), yt + u(3, 6), zt - u(2, 4)]), term], R["ica"][0], R["ica"][1], tortuosity=0.4,
                    speed=SPEED["ica"])
        length, rise = lm["m1_length"], lm["m1_rise"]
        m1_end = term + np.array([s * length, u(0, 3), rise])
        m1 = b.add(f"m1_{side}", mca_l, [term, term + np.array([s * length * 0.5, u(1, 3.5), 0.5 * rise]), m1_end],
                   R["m1"][0], R["m1"][1], parent=ica, speed=SPEED["m1"])
        b.add(f"m2_superior_{side}", mca_l, [
            m1_end, m1_end + np.array([s * u(2, 4), u(-3, -1), u(3, 5)]),
            m1_end + np.array([s * u(5, 7), u(-9, -6), u(7, 10)]),
            m1_end + np.array([s * u(6, 9), u(-16, -12), u(10, 14)])], R["m2"][0], R["m2"][1], parent=m1)
        b.add(f"m2_inferior_{side}", mca_l, [
            m1_end, m1_end + np.array([s * u(3, 5), u(-3, -1), u(-1, 1)]),
            m1_end + np.array([s * u(6, 9), u(-10, -7), u(0, 2)]),
            m1_end + np.array([s * u(8, 11), u(-19, -14), u(1, 4)])], R["m2"][0] * 0.95, R["m2"][1], parent=m1)
        for k in range(int(rng.integers(2, 5))):
            origin = b.point(m1, float(u(0.15, 0.75)))
            b.add(f"lenticulostriate_{side}_{k}", UNLABELLED, [
                origin, origin + np.array([s * u(-2, 1), u(-3, 1), u(4, 6)]),
                origin + np.array([s * u(-4, 0), u(-6, 0), u(9, 14)])], 0.36, 0.28, parent=m1, tortuosity=1.5)
        ophthalmic_origin = b.point(ica, 0.72)
        b.add(f"ophthalmic_{side}", UNLABELLED, [
            ophthalmic_origin, ophthalmic_origin + np.array([s * u(0.5, 2), u(3, 4), u(0.5, 1.5)]),
            ophthalmic_origin + np.array([s * u(2, 4), u(7, 10), u(0, 1.5)])], 0.42, 0.32, parent=ica, tortuosity=0.8)
        choroidal_origin = b.point(ica, 0.93)
        b.add(f"anterior_choroidal_{side}", UNLABELLED, [
            choroidal_origin, choroidal_origin + np.array([s * u(2, 4), u(-6, -4), u(1, 3)]),
            choroidal_origin + np.array([s * u(5, 8), u(-14, -10), u(3, 6)])], 0.35, 0.3, parent=ica, tortuosity=1.5)
        # Without an Acom the two A1-A2 junctions lie apart, so that no lumen joins the sides where no Acom is labelled
        hypoplastic = v.a1_hypoplastic_left if left else v.a1_hypoplastic_right
        a1_end_r = min(a1_radius[s] * 0.95 * lm["radius_scale"], HYPOPLASTIC_MAX_RADIUS if hypoplastic else math.inf)
        junction_r = max(R["a2"][0] * lm["radius_scale"], a1_end_r)
        half = max(lm["acom_length"] / 2.0, float(midline_clearance(junction_r, scale))) \
            if v.acom_absent else lm["acom_length"] / 2.0
        acom_end = np.array([s * half, ya, za])
        acom_ends[s] = acom_end
        if not (v.a1_absent_left if left else v.a1_absent_right):
            mid = 0.5 * (term + acom_end) + np.array([0.0, u(0.5, 3.0), u(0.5, 2.0)])
            a1 = b.add(f"a1_{side}", aca_l, [term, mid, acom_end], a1_radius[s], a1_radius[s] * 0.95, parent=ica,
                       max_radius=HYPOPLASTIC_MAX_RADIUS if hypoplastic else math.inf)
            if v.acom_absent:  # tortuosity must not bend it across
                b.keep_off_midline(a1, s, scale)
        gap = max(lm["a2_half_gap"], 1.8) if v.third_a2 else lm["a2_half_gap"]
        gap = max(gap, half) if v.acom_absent else gap  # and the A2s do not meet above it
        a2 = b.add(f"a2_{side}", aca_l, [acom_end, np.array([s * gap, ya + u(0.5, 1.5), za + 3.0]),
                                         np.array([s * gap * u(0.8, 1.3), ya + u(4, 7), za + u(8, 10)]),
                                         np.array([s * gap * u(0.8, 1.3), ya + u(10, 14), za + u(14, 17)])],
                   R["a2"][0], R["a2"][1], tortuosity=0.6)
        if v.acom_absent:  # nor spread control points or tortuosity bring the A2s together above the junctions
            b.keep_off_midline(a2, s, scale)
        orbital = b.point(a2, 0.35)
        b.add(f"orbitofrontal_{side}", UNLABELLED, [orbital, orbital + np.array([s * u(2, 4), u(4, 7), u(-1, 1)]),
                                                    orbital + np.array([s * u(4, 8), u(10, 14), u(-2, 1)])],
              0.4, 0.3, parent=a2, tortuosity=1.2)
        junction = np.array([s * lm["p1_length"], u(1.0, 3.0), lm["p1_rise"]])
        fetal = v.fetal_pca_left if left else v.fetal_pca_right
        p1_absent = v.p1_absent_left if left else v.p1_absent_right
        pcom_absent = v.pcom_absent_left if left else v.pcom_absent_right
        p1 = pcom = None
        if not p1_absent:
            p1_r = float(u(0.38, 0.5)) if fetal else R["p1"]
            p1 = b.add(f"p1_{side}", pca_l, [tip, np.array([s * lm["p1_length"] * 0.5, 0.5 * junction[1] + u(-0.5, 0.5),
                                                       0.5 * lm["p1_rise"] + u(-0.3, 0.6)]), junction],
                  p1_r, p1_r * 0.97, parent=ba, max_radius=HYPOPLASTIC_MAX_RADIUS if fetal else math.inf)
        if not pcom_absent:
            start = b.point(ica, 0.95)
            mid = 0.5 * (start + junction) + np.array([s * u(-0.5, 1.5), 0.0, u(-2.0, 0.0)])
            pcom_r = float(u(1.05, 1.25)) if fetal else float(u(*R["pcom"]))
            pcom = b.add(f"pcom_{side}", pcom_l, [start, mid, junction], pcom_r, pcom_r * 0.95, parent=ica,
                  slow_flow=1.0 if fetal else float(u(0.55, 0.95)))
        mw = lm["midbrain_half_width"]
        z0 = junction[2]
        p2 = b.add(f"p2_{side}", pca_l, [junction, np.array([s * (mw - 2.0), u(-3, -1), z0 + u(0.5, 1.5)]),
                                         np.array([s * (mw + 0.5), u(-9, -7), z0 + u(1.5, 3.0)]),
                                         np.array([s * (mw - 0.5), u(-17, -14), z0 + u(2.5, 4.5)]),
                                         np.array([s * (mw - 3.5), u(-25, -22), z0 + u(3.5, 6.5)]),
                                         np.array([s * (mw - u(6, 9)), u(-35, -30), z0 + u(5, 9)])],
                   R["p2"][0], R["p2"][1], parent=_p2_inflow(p1, pcom, fetal, ba))
        temporal_origin = b.point(p2, float(u(0.3, 0.45)))
        b.add(f"temporal_pca_{side}", UNLABELLED, [temporal_origin, temporal_origin + np.array([s * u(4, 6), u(-2, 0), u(-2, 0)]),
                                                   temporal_origin + np.array([s * u(9, 13), u(-2, 3), u(-4, -1)])],
              0.5, 0.4, parent=p2, tortuosity=1.2)
        for k in range(int(rng.integers(1, 4))):
            origin = b.point(ba, 1.0) if p1_absent else b.point(_find(b.vessels, f"p1_{side}"), float(u(0.2, 0.8)))
            b.add(f"thalamoperforator_{side}_{k}", UNLABELLED, [
                origin, origin + np.array([s * u(0, 1.5), u(-2, 0), u(3, 5)]),
                origin + np.array([s * u(0, 3), u(-4, 0), u(7, 10)])], 0.3, 0.25, parent=ba, tortuosity=1.5)
        if v.sca_left if left else v.sca_right:
            origin = b.point(ba, float(u(0.86, 0.92)))
            z1 = origin[2]
            b.add(f"sca_{side}", UNLABELLED, [origin, np.array([s * u(4.5, 6), -1.5, z1 - u(0, 1)]),
                                              np.array([s * (mw - u(1, 3)), u(-8, -5), z1 - u(1, 2.5)]),
                                              np.array([s * (mw - u(0, 2)), u(-16, -12), z1 - u(3, 5)]),
                                              np.array([s * (mw - u(4, 7)), u(-23, -19), z1 - u(6, 9)])],
                  R["sca"][0], R["sca"][1], parent=ba)
    if not v.acom_absent:
        acom_r = R["acom"][1] + 0.1 if (v.a1_hypoplastic_left or v.a1_hypoplastic_right) else float(u(*R["acom"]))
        parent = _find(b.vessels, "a1_right") if not v.a1_absent_right else _find(b.vessels, "a1_left")
        mid = 0.5 * (acom_ends[1] + acom_ends[-1]) + np.array([0.0, u(0.0, 0.8), u(-0.3, 0.3)])
        b.add("acom", topcow.ACOM, [acom_ends[-1], mid, acom_ends[1]], acom_r, acom_r, parent=parent,
              tortuosity=0.0, slow_flow=float(u(0.7, 1.0)))
        if v.acom_duplicated:
            lift = np.array([0.0, u(0.8, 1.5), u(1.8, 2.6)])
            b.add("acom_duplicate", topcow.ACOM, [acom_ends[-1] + lift + np.array([-0.4, 0, 0]), mid + lift,
                                                  acom_ends[1] + lift + np.array([0.4, 0, 0])],
                  0.55, 0.55, parent=parent, tortuosity=0.0, slow_flow=0.8)
        if v.third_a2:
            origin = 0.5 * (acom_ends[1] + acom_ends[-1])
            b.add("third_a2", topcow.THIRD_A2, [origin, origin + np.array([u(-0.3, 0.3), u(0.5, 1.5), 3.0]),
                                                origin + np.array([u(-0.5, 0.5), u(4, 7), u(8, 10)]),
                                                origin + np.array([u(-0.8, 0.8), u(10, 14), u(14, 17)])],
                  0.85, 0.75, parent=parent, tortuosity=0.6)
    for side in ("left", "right"):
        a1 = _find(b.vessels, f"a1_{side}")
        b.vessels[_find(b.vessels, f"a2_{side}")].parent = a1 if a1 is not None else _find(b.vessels, "acom")
    return b.vessels


def _p2_inflow(p1: Optional[int], pcom: Optional[int], fetal: bool, basilar: int) -> int:
    """The vessel whose blood fills the P2: the Pcom of a fetal PCA (or without a P1), else the P1."""
    if pcom is not None and (fetal or p1 is None):
        return pcom
    return p1 if p1 is not None else basilar


def _find(vessels: List[Vessel], name: str) -> Optional[int]:
    for k, vessel in enumerate(vessels):
        if vessel.name == name:
            return k
    return None


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation about x (pitch), y (roll) then z (yaw), angles in degrees."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_pose(rng: np.random.Generator, cfg: AnatomyConfig) -> Dict[str, object]:
    """The subject's scale, rotation (degrees about x, y, z) and basilar tip position (mm from the grid centre)."""
    return {"scale": draw(rng, cfg.scale),
            "rotation_deg": [float(rng.uniform(-m, m)) for m in cfg.rotation_deg],
            "tip_mm": [float(rng.uniform(lo, hi)) for lo, hi in cfg.tip_position_mm]}


def place(vessels: List[Vessel], pose: Dict[str, object]) -> None:
    """Move the vessels from the template frame into the grid's world frame, in place; radii scale too."""
    scale = float(pose["scale"])  # type: ignore[arg-type]
    rot = rotation_matrix(np.asarray(pose["rotation_deg"]))
    shift = np.asarray(pose["tip_mm"], float)
    for vessel in vessels:
        vessel.points = (scale * vessel.points) @ rot.T + shift
        vessel.radii = np.minimum(vessel.radii * np.sqrt(scale), vessel.max_radius)


def flow_saturation(vessels: List[Vessel], in_plane_weight: float = 1.0, through_plane_weight: float = 0.25) -> None:
    """Accumulate spin saturation (mm-equivalent) along the tree: in-plane flow saturates faster than through-plane."""
    done: Dict[int, np.ndarray] = {}

    def compute(k: int) -> np.ndarray:
        if k in done:
            return done[k]
        vessel = vessels[k]
        start = 0.0
        if vessel.parent is not None:
            parent = vessels[vessel.parent]
            parent_sat = compute(vessel.parent)
            nearest = int(np.argmin(np.linalg.norm(parent.points - vessel.points[0], axis=1)))
            start = float(parent_sat[nearest])
        steps = np.diff(vessel.points, axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        in_plane = np.linalg.norm(steps[:, :2], axis=1) / np.maximum(lengths, 1e-9)
        weight = through_plane_weight + (in_plane_weight - through_plane_weight) * in_plane
        sat = start + np.concatenate([[0.0], np.cumsum(lengths * weight / vessel.speed)])
        done[k] = sat
        return sat

    for k, vessel in enumerate(vessels):
        vessel.saturation = compute(k)
