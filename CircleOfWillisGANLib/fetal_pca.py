"""Fetal PCA from a TopCoW label map: a Pcom with an absent P1, or with a hypoplastic one.

Label values say whether a P1 is there, not how wide it is, so a present P1 is measured, and called hypoplastic
when it is under 1 mm wide (DOMAIN.md) or narrower than its Pcom by a clear margin (the literature's fetal-type
PCA: the Pcom, not the P1, feeds the PCA). Each segment's centreline is the shortest path through its label,
kept to the lumen's middle: the P1's from where the PCA meets the basilar artery to where it meets its Pcom, the
Pcom's between the ends of its label. Its radius is the equal-area one: the label's volume around the
centreline per millimetre of it, leaving out the ends whose inscribed sphere reaches into another artery. Unlike
the distance to the nearest background voxel, that volume does not depend on where a vessel lies between thick
slices. Label maps may be in any storage order: only the voxel size along each array axis is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import require
from .topcow import (BA, HYPOPLASTIC_WIDTH_MM, L_PCA, L_PCOM, R_PCA, R_PCOM, centreline_radii, contact_points,
                     normalise_labels, variant_vectors)
from .volume_io import check_spacing

SIDES = {"left": (L_PCA, L_PCOM), "right": (R_PCA, R_PCOM)}
NEIGHBOURS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])
P1_TO_PCOM = 0.7  # a P1 under 70% of its Pcom's radius is the narrower by more than the radii's voxel steps
MIN_VOXELS_ACROSS = 1.5  # voxels a 1 mm lumen must span on every axis for its area to tell it from a normal P1's
MAX_RESOLVING_SPACING_MM = HYPOPLASTIC_WIDTH_MM / MIN_VOXELS_ACROSS
LABEL_MARGIN_VOXELS = 0.25  # annotators (and phantoms) label the bright partial-volume rim: 1/4 of the finest voxel
TUBE_REACH_MM = 3.0  # label voxels farther than this from a centreline belong to another part of the artery
AREA_WINDOW_MM = 1.5  # centreline length each area is averaged over: a few voxels, short against a P1's 5-10 mm


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
    """True when no axis is coarser than 2/3 mm: a lumen 1 mm wide then spans 1.5 voxels or more on every axis, enough
    for its cross-section's area to tell a hypoplastic P1 from a normal one."""
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
        ends = _label_ends(lab == pcom, sizes)
        pcom_line = _centreline(lab == pcom, radius, *ends, sizes)
        out[side] = PosteriorCalibre(_equal_area_radius(lab, pca, p1, radius, sizes),
                                     _equal_area_radius(lab, pcom, pcom_line, radius, sizes))
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


def _equal_area_radius(lab: np.ndarray, label: int, centreline: Optional[np.ndarray], radius: np.ndarray,
                       sizes: np.ndarray) -> Optional[float]:
    """Lumen radius: sqrt(area / pi) less the label's rim, the area being the median, along the interior of the (N, 3)
    centreline voxels, of the `label` voxels' volume per mm of centreline over AREA_WINDOW_MM; each voxel counts
    towards its nearest centreline voxel. The interior leaves out the path's two end voxels and those whose inscribed
    sphere reaches into another artery (their slabs hold the junction's lumen); the median leaves out a bulge where
    the artery branches. A path too short to have an interior falls back to the median inscribed radius. None
    without a path."""
    ndi = require("scipy.ndimage", "P1 calibre measurement", "scipy")
    spatial = require("scipy.spatial", "P1 calibre measurement", "scipy")
    if centreline is None or not len(centreline):
        return None
    at = tuple(centreline.T)
    to_other_arteries = ndi.distance_transform_edt((lab == 0) | (lab == label), sampling=sizes)
    interior = to_other_arteries[at] > radius[at]
    interior[[0, -1]] = False
    if not interior.any():
        chosen = np.zeros(lab.shape, bool)
        chosen[at] = True
        return float(np.median(centreline_radii(radius, chosen, sizes)))
    path_mm = centreline * sizes
    steps = np.linalg.norm(np.diff(path_mm, axis=0), axis=1)
    owned = (np.concatenate([steps[:1], steps]) + np.concatenate([steps, steps[-1:]])) / 2
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    distance, nearest = spatial.cKDTree(path_mm).query(np.argwhere(lab == label) * sizes)
    volume = np.bincount(nearest[distance <= TUBE_REACH_MM], minlength=len(centreline)) * float(np.prod(sizes))
    areas = []
    for i in np.flatnonzero(interior):
        window = interior & (np.abs(arc - arc[i]) <= AREA_WINDOW_MM / 2)
        areas.append(volume[window].sum() / owned[window].sum())
    return max(float(np.sqrt(np.median(areas) / np.pi)) - LABEL_MARGIN_VOXELS * float(sizes.min()), 0.0)


def _label_ends(mask: np.ndarray, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) voxels of `mask` within a voxel of each end along its principal axis (in mm): the two ends of a short
    straight segment, as sets, so that no storage order picks one voxel of a flat end over another."""
    points = np.argwhere(mask)
    if len(points) < 2:
        return points[:0], points[:0]
    mm = points * sizes
    centred = mm - mm.mean(axis=0)
    along = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    tolerance = float(sizes.min())
    return points[along <= along.min() + tolerance], points[along >= along.max() - tolerance]


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
