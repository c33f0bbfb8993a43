"""Weight-free, interpretable features of one TOF-MRA volume: vessel morphology from a thresholded vessel
mask and its skeleton, plus intensity statistics. They form the default feature space of `cowgan evaluate`.

Volumes are expected min-max normalised to [0, 1]; the vessel mask is every voxel at or above a fixed
threshold (0.3 by default: tissue sits near 0.1 and vessels at 0.3-0.97 in normalised TOF-MRA), the same for
every volume so that real and generated volumes are measured alike.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import product
from typing import Dict, List, Sequence

import numpy as np

from ..errors import InputError
from ..topcow import centreline_radii

FEATURE_DESCRIPTIONS = OrderedDict([
    ("vessel_fraction_pct", "share of voxels in the vessel mask (%)"),
    ("vessel_volume_ml", "vessel mask volume (ml)"),
    ("components", "connected vessel components of at least min_component_voxels (26-connectivity)"),
    ("largest_component_share", "share of the vessel volume in the largest component"),
    ("skeleton_length_mm", "total centreline length (mm)"),
    ("branch_points", "centreline junctions (clusters of skeleton voxels with 3 or more neighbours)"),
    ("end_points", "centreline ends (skeleton voxels with 1 neighbour)"),
    ("radius_mean_mm", "mean vessel radius along the centreline (mm, distance transform less a quarter voxel)"),
    ("radius_p10_mm", "10th percentile of the centreline radius (mm)"),
    ("radius_p50_mm", "median centreline radius (mm)"),
    ("radius_p90_mm", "90th percentile of the centreline radius (mm)"),
    ("lr_volume_asymmetry", "(left - right) / (left + right) vessel volume; 0 = symmetric"),
    ("lr_length_asymmetry", "(left - right) / (left + right) centreline length; 0 = symmetric"),
    ("background_mean", "mean intensity outside the vessel mask"),
    ("background_sd", "intensity standard deviation outside the vessel mask (noise and texture)"),
    ("vessel_mean", "mean intensity inside the vessel mask"),
    ("intensity_p99", "99th intensity percentile"),
])
FEATURE_NAMES = tuple(FEATURE_DESCRIPTIONS)
FEATURES_VERSION = 2  # in the feature cache key: bump when a feature's definition changes (2: radii less a quarter voxel)


@dataclass(frozen=True)
class MorphologyConfig:
    """How the vessel mask is made; part of the feature cache key."""

    threshold: float = 0.3
    min_component_voxels: int = 5


def _neighbour_offsets() -> List[tuple]:
    return [o for o in product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]


def _shifted(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """mask moved by `offset` (voxels), zero-filled: out[p] = mask[p + offset]."""
    out = np.zeros_like(mask)
    src = tuple(slice(max(o, 0), mask.shape[a] + min(o, 0)) for a, o in enumerate(offset))
    dst = tuple(slice(max(-o, 0), mask.shape[a] + min(-o, 0)) for a, o in enumerate(offset))
    out[dst] = mask[src]
    return out


def skeleton_graph_stats(skeleton: np.ndarray, spacing_dhw: Sequence[float]) -> Dict[str, float]:
    """Length (mm), junctions and ends of a 3D skeleton, from each voxel's 26-neighbour count."""
    from scipy import ndimage

    skel = skeleton.astype(bool)
    degree = np.zeros(skel.shape, dtype=np.int16)
    length = 0.0
    for offset in _neighbour_offsets():
        neighbour = _shifted(skel, offset) & skel
        degree += neighbour
        length += float(neighbour.sum()) * float(np.linalg.norm(np.multiply(offset, spacing_dhw)))
    junction_voxels = skel & (degree >= 3)
    _, junctions = ndimage.label(junction_voxels, structure=np.ones((3, 3, 3)))
    return {"length_mm": length / 2.0, "branch_points": float(junctions), "end_points": float(np.sum(skel & (degree == 1))),
            "isolated_points": float(np.sum(skel & (degree == 0)))}


def _skeleton(mask: np.ndarray, labels: np.ndarray, n: int, distance: np.ndarray) -> np.ndarray:
    """Lee's 3D thinning, plus the deepest voxel of any component that thinning erased entirely (it can do so
    for perfectly symmetric, axis-aligned bars of even width), so every component keeps a centre point."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    if not n:
        return np.zeros_like(mask)
    skeleton = skeletonize(mask) > 0
    present = np.zeros(n + 1, dtype=bool)
    present[np.unique(labels[skeleton])] = True
    missing = [i for i in range(1, n + 1) if not present[i]]
    if missing:
        for position in ndimage.maximum_position(distance, labels, missing):
            skeleton[position] = True
    return skeleton


def _asymmetry(left: float, right: float) -> float:
    total = left + right
    return (left - right) / total if total > 0 else 0.0


def morphology_features(volume_dhw: np.ndarray, spacing_xyz: Sequence[float] = (0.62, 0.62, 0.62),
                        left_is_low_h: bool = True, config: MorphologyConfig = MorphologyConfig()) -> Dict[str, float]:
    """The FEATURE_NAMES features of one normalised (D, H, W) volume; spacing is NIfTI (x, y, z) = (H, W, D) axes.

    `left_is_low_h` says whether the subject's left lies at low H indices (true for an LAS-like i axis; the
    pipeline derives it from the affine); it only decides the sign of the asymmetry features.
    """
    from scipy import ndimage

    v = np.asarray(volume_dhw, dtype=np.float32)
    if v.ndim != 3:
        raise InputError(f"morphology needs a 3D (D, H, W) volume, got shape {v.shape}")
    spacing_dhw = (float(spacing_xyz[2]), float(spacing_xyz[0]), float(spacing_xyz[1]))
    voxel_ml = float(np.prod(spacing_dhw)) / 1000.0
    mask = v >= config.threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=np.int64)
    kept = sizes[sizes >= config.min_component_voxels]
    distance = ndimage.distance_transform_edt(mask, sampling=spacing_dhw)
    skeleton = _skeleton(mask, labels, n, distance)
    stats = skeleton_graph_stats(skeleton, spacing_dhw)
    radii = centreline_radii(distance, skeleton, spacing_dhw) if skeleton.any() else np.zeros(1)
    half = v.shape[1] // 2
    low, high = (slice(0, half), slice(v.shape[1] - half, v.shape[1]))
    left, right = (low, high) if left_is_low_h else (high, low)
    skel_length = {side: skeleton_graph_stats(skeleton[:, s], spacing_dhw)["length_mm"] for side, s in (("l", left), ("r", right))}
    background = v[~mask] if (~mask).any() else np.zeros(1, dtype=np.float32)
    vessels = v[mask] if mask.any() else np.zeros(1, dtype=np.float32)
    values = {
        "vessel_fraction_pct": 100.0 * float(mask.mean()),
        "vessel_volume_ml": float(mask.sum()) * voxel_ml,
        "components": float(kept.size),
        "largest_component_share": float(sizes.max() / sizes.sum()) if sizes.size else 0.0,
        "skeleton_length_mm": stats["length_mm"],
        "branch_points": stats["branch_points"],
        "end_points": stats["end_points"],
        "radius_mean_mm": float(np.mean(radii)),
        "radius_p10_mm": float(np.percentile(radii, 10)),
        "radius_p50_mm": float(np.percentile(radii, 50)),
        "radius_p90_mm": float(np.percentile(radii, 90)),
        "lr_volume_asymmetry": _asymmetry(float(mask[:, left].sum()), float(mask[:, right].sum())),
        "lr_length_asymmetry": _asymmetry(skel_length["l"], skel_length["r"]),
        "background_mean": float(background.mean()),
        "background_sd": float(background.std()),
        "vessel_mean": float(vessels.mean()),
        "intensity_p99": float(np.percentile(v, 99)),
    }
    return OrderedDict((name, values[name]) for name in FEATURE_NAMES)


def features_to_vector(features: Dict[str, float]) -> np.ndarray:
    """The features in FEATURE_NAMES order as a float64 vector."""
    return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float64)
