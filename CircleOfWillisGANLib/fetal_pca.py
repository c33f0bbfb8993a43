"""Fetal PCA from a TopCoW label map: a Pcom with an absent P1, or with a hypoplastic one.

Label values say whether a P1 is there, not how wide it is, so a present P1 is measured, and called hypoplastic
when it is under 1 mm wide (DOMAIN.md) or narrower than its Pcom by a clear margin (the literature's fetal-type
PCA: the Pcom, not the P1, feeds the PCA). The P1's centreline is the shortest path through the PCA label from
where it meets the basilar artery to where it meets its Pcom, kept to the lumen's middle; the Pcom's is the
ridge of its label. Each radius is the median of `topcow.centreline_radii` along the centreline, leaving out
the ends whose inscribed sphere reaches into another artery. Label maps may be in any storage order: only the
voxel size along each array axis is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from .errors import require
from .topcow import (BA, HYPOPLASTIC_WIDTH_MM, L_PCA, L_PCOM, R_PCA, R_PCOM, centreline_radii, contact_points,
                     normalise_labels, variant_vectors)
from .volume_io import check_spacing

SIDES = {"left": (L_PCA, L_PCOM), "right": (R_PCA, R_PCOM)}
NEIGHBOURS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])
P1_TO_PCOM = 0.7  # a P1 under 70% of its Pcom's radius is the narrower by more than the radii's voxel steps
TIE_MM = 1e-4  # radii this close are equal: voxel sizes read from headers differ in their last digits
THREAD_READING = 0.75  # a one-voxel-wide vessel reads as 3/4 of a voxel: one voxel to the background less the quarter
MAX_RESOLVING_SPACING_MM = 0.5 * HYPOPLASTIC_WIDTH_MM / THREAD_READING  # coarser voxels read any P1 as >= 1 mm wide


@dataclass(frozen=True)
class PosteriorCalibre:
    """Median radii (mm) of one side's P1 and Pcom; None where that segment is absent or cannot be traced."""

    p1_mm: Optional[float]
    pcom_mm: Optional[float]

    @property
    def hypoplastic_p1(self) -> bool:
        """A measured P1 under 1 mm wide, or under 70% of its Pcom's radius."""
        if self.p1_mm is None:
            return False
        narrower_than_pcom = self.pcom_mm is not None and self.p1_mm < P1_TO_PCOM * self.pcom_mm
        return 2 * self.p1_mm < HYPOPLASTIC_WIDTH_MM or narrower_than_pcom


def resolves_hypoplastic_p1(spacing: Sequence[float]) -> bool:
    """True when voxels this size show a P1 under 1 mm wide as under 1 mm (no axis coarser than 2/3 mm)."""
    return bool(max(check_spacing(spacing)) <= MAX_RESOLVING_SPACING_MM)


def posterior_calibre(labels: np.ndarray, spacing: Sequence[float]) -> Dict[str, PosteriorCalibre]:
    """P1 and Pcom radii of each side ("left", "right") of a label map with voxels `spacing` mm along its axes."""
    ndi = require("scipy.ndimage", "P1 calibre measurement", "scipy")
    lab = normalise_labels(labels)
    sizes = np.asarray(check_spacing(spacing))
    vessel = lab > 0
    radius = ndi.distance_transform_edt(vessel, sampling=sizes)
    out = {}
    for side, (pca, pcom) in SIDES.items():
        if not (lab == pcom).any():
            out[side] = PosteriorCalibre(None, None)
            continue
        p1 = _centreline(lab == pca, radius, contact_points(lab, pca, (BA,)), contact_points(lab, pca, (pcom,)), sizes)
        pcom_radius = np.where(lab == pcom, radius, 0)
        ridge = (lab == pcom) & (radius >= ndi.maximum_filter(pcom_radius, size=3) - TIE_MM)
        out[side] = PosteriorCalibre(_median_radius(lab, pca, p1, radius, sizes),
                                     _median_radius(lab, pcom, np.argwhere(ridge), radius, sizes))
    return out


def fetal_pca(labels: np.ndarray, spacing: Sequence[float]) -> Dict[str, int]:
    """{"left": 0/1, "right": 0/1}: a Pcom present with its P1 absent or hypoplastic (`PosteriorCalibre`), for a
    label map with voxels `spacing` mm along its array axes."""
    lab = normalise_labels(labels)
    check_spacing(spacing)
    named = variant_vectors(lab).named()
    calibre = None
    out = {}
    for side, prefix in (("left", "L"), ("right", "R")):
        if not named[f"{prefix}-Pcom"]:
            out[side] = 0
        elif not named[f"{prefix}-P1"]:
            out[side] = 1
        else:
            calibre = calibre or posterior_calibre(lab, spacing)
            out[side] = int(calibre[side].hypoplastic_p1)
    return out


def _median_radius(lab: np.ndarray, label: int, centreline: Optional[np.ndarray], radius: np.ndarray,
                   sizes: np.ndarray) -> Optional[float]:
    """Median radius along (N, 3) centreline voxels of `label`, over those whose inscribed sphere stays inside it
    (all of them where none does); None without a centreline."""
    ndi = require("scipy.ndimage", "P1 calibre measurement", "scipy")
    if centreline is None or not len(centreline):
        return None
    at = tuple(centreline.T)
    to_other_arteries = ndi.distance_transform_edt((lab == 0) | (lab == label), sampling=sizes)
    inside = to_other_arteries[at] > radius[at]
    chosen = np.zeros(lab.shape, bool)
    chosen[tuple(centreline[inside].T) if inside.any() else at] = True
    return float(np.median(centreline_radii(radius, chosen, sizes)))


def _centreline(mask: np.ndarray, radius: np.ndarray, start: np.ndarray, end: np.ndarray,
                sizes: np.ndarray) -> Optional[np.ndarray]:
    """(N, 3) voxels of the shortest path through `mask` from the (N, 3) voxels `start` to those of `end`, each step's
    length divided by the radius there so that the path keeps to the lumen's middle; None when no path joins them."""
    sparse = require("scipy.sparse", "P1 calibre measurement", "scipy")
    csgraph = require("scipy.sparse.csgraph", "P1 calibre measurement", "scipy")
    points = np.argwhere(mask)
    if not len(start) or not len(end):
        return None
    index = np.full(mask.shape, -1)
    index[mask] = np.arange(len(points))
    sources, targets = index[tuple(start.T)], index[tuple(end.T)]
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols, costs = [], [], []
    point_radius = radius[mask]
    for offset in NEIGHBOURS:
        neighbour = padded[tuple((points + 1 + offset).T)]
        linked = neighbour >= 0
        a, b = np.flatnonzero(linked), neighbour[linked]
        rows.append(a)
        cols.append(b)
        costs.append(float(np.linalg.norm(offset * sizes)) * 2.0 / (point_radius[a] + point_radius[b]))
    graph = sparse.csr_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(len(points),) * 2)
    distance, previous, _ = csgraph.dijkstra(graph, indices=sources, min_only=True, return_predecessors=True)
    last = targets[np.argmin(distance[targets])]
    if not np.isfinite(distance[last]):
        return None
    path = [last]
    while previous[path[-1]] >= 0:
        path.append(previous[path[-1]])
    return points[path]
