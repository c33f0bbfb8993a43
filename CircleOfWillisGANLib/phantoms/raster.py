"""Rasterising tubes onto a voxel grid locally: each short run of centreline pieces fills only its bounding box.

For every voxel near a tube we compute the distance to the polyline (vectorised over pieces) and keep,
over all tubes, the smallest signed distance to the surface (negative inside), the brightness of the tube
that owns the voxel, and its label. Thin vessels are labelled at least one voxel wide so that their labels
stay connected, as in manual TopCoW annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import numpy as np

PIECES_PER_CHUNK = 6
FAR_MM = 1.0e3


@dataclass
class Tube:
    """A polyline (N, 3) in world mm with radius and brightness per point, and its label.

    `label_priority_mm` lets a short segment (the Acom) keep its label where thicker neighbours overlap it.
    """

    points: np.ndarray
    radii: np.ndarray
    brightness: np.ndarray
    label: int
    label_priority_mm: float = 0.0


@dataclass
class RasterResult:
    """Per-voxel maps (D, H, W): signed distance to the vessel surface (mm), brightness and lumen radius (mm) of the
    nearest tube, label."""

    sdf: np.ndarray
    brightness: np.ndarray
    labels: np.ndarray
    radius: np.ndarray


class Grid:
    """An axis-aligned voxel grid: (D, H, W) shape and the world mm of voxel centres along each axis."""

    def __init__(self, shape_dhw: Sequence[int], affine: np.ndarray) -> None:
        self.shape = tuple(int(n) for n in shape_dhw)
        a = np.asarray(affine, float)
        d, h, w = self.shape
        self.x = a[0, 0] * np.arange(h) + a[0, 3]
        self.y = a[1, 1] * np.arange(w) + a[1, 3]
        self.z = a[2, 2] * np.arange(d) + a[2, 3]
        self.spacing = (abs(a[0, 0]), abs(a[1, 1]), abs(a[2, 2]))
        self._origin = a[:3, 3]

    def index_range(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> Tuple[slice, slice, slice]:
        """Slices (D, H, W) of the voxels whose centres lie in the world box [lo, hi]."""
        spacing = np.asarray(self.spacing)
        start = np.ceil((lo_mm - self._origin) / spacing).astype(int)
        stop = np.floor((hi_mm - self._origin) / spacing).astype(int) + 1
        d, h, w = self.shape
        limits = (h, w, d)
        start = [max(0, min(limits[k], start[k])) for k in range(3)]
        stop = [max(0, min(limits[k], stop[k])) for k in range(3)]
        return slice(start[2], stop[2]), slice(start[0], stop[0]), slice(start[1], stop[1])


def rasterise(tubes: Sequence[Tube], grid: Grid, min_label_radius_mm: float, label_margin_mm: float = 0.0) -> RasterResult:
    """Signed distance, brightness and labels of the union of `tubes` on `grid` (smallest signed distance wins).

    A voxel is labelled when its centre lies within the tube radius (at least `min_label_radius_mm`) plus
    `label_margin_mm`, so that bright partial-volume voxels at the edge are labelled as annotators do.
    """
    sdf = np.full(grid.shape, FAR_MM, dtype=np.float32)
    label_sdf = np.full(grid.shape, FAR_MM, dtype=np.float32)
    brightness = np.zeros(grid.shape, dtype=np.float32)
    radius = np.zeros(grid.shape, dtype=np.float32)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    margin = 1.5 * max(grid.spacing)
    for tube in tubes:
        n = len(tube.points)
        for first in range(0, n - 1, PIECES_PER_CHUNK):
            last = min(n - 1, first + PIECES_PER_CHUNK)
            _chunk(tube, first, last, grid, margin, min_label_radius_mm + label_margin_mm, label_margin_mm, sdf, label_sdf,
                   brightness, labels, radius)
    return RasterResult(sdf, brightness, labels, radius)


def _chunk(tube: Tube, first: int, last: int, grid: Grid, margin: float, min_label_radius: float, margin_label: float,
           sdf: np.ndarray, label_sdf: np.ndarray, brightness: np.ndarray, labels: np.ndarray,
           radius_map: np.ndarray) -> None:
    p = tube.points[first: last + 1]
    r = tube.radii[first: last + 1]
    reach = float(r.max()) + margin
    sd, sh, sw = grid.index_range(p.min(axis=0) - reach, p.max(axis=0) + reach)
    if sd.start >= sd.stop or sh.start >= sh.stop or sw.start >= sw.stop:
        return
    z = grid.z[sd][:, None, None, None]
    x = grid.x[sh][None, :, None, None]
    y = grid.y[sw][None, None, :, None]
    a, b = p[:-1], p[1:]
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)
    t = ((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1] + (z - a[:, 2]) * ab[:, 2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt((x - a[:, 0] - t * ab[:, 0]) ** 2 + (y - a[:, 1] - t * ab[:, 1]) ** 2
                   + (z - a[:, 2] - t * ab[:, 2]) ** 2)
    radius = r[:-1] + t * (r[1:] - r[:-1])
    piece_sdf = dist - radius
    best = np.argmin(piece_sdf, axis=-1)[..., None]
    local_sdf = np.take_along_axis(piece_sdf, best, axis=-1)[..., 0].astype(np.float32)
    t_best = np.take_along_axis(t, best, axis=-1)[..., 0]
    bright = tube.brightness[first: last + 1]
    local_bright = (bright[:-1][best[..., 0]] + t_best * (bright[1:] - bright[:-1])[best[..., 0]]).astype(np.float32)
    local_radius = np.take_along_axis(radius, best, axis=-1)[..., 0].astype(np.float32)
    region = (sd, sh, sw)
    closer = local_sdf < sdf[region]
    sdf[region] = np.where(closer, local_sdf, sdf[region])
    brightness[region] = np.where(closer, local_bright, brightness[region])
    radius_map[region] = np.where(closer, local_radius, radius_map[region])
    local_label_sdf = np.min(dist - np.maximum(radius + margin_label, min_label_radius), axis=-1).astype(np.float32)
    local_label_sdf -= np.float32(tube.label_priority_mm)
    if tube.label:
        claim = (local_label_sdf < -tube.label_priority_mm) & (local_label_sdf < label_sdf[region])
        labels[region] = np.where(claim, np.uint8(tube.label), labels[region])
        label_sdf[region] = np.where(claim, local_label_sdf, label_sdf[region])


def merge_label_islands(labels: np.ndarray, keep: Callable[[np.ndarray], bool]) -> np.ndarray:
    """`labels` with each class in one piece where possible: every piece of a class but its largest goes to the label
    it touches most (26-neighbourhood), as long as `keep(new_labels)` holds (e.g. the TopCoW variant vectors are
    unchanged). Pieces that touch no other label (a vessel leaving and re-entering the grid) stay."""
    from scipy import ndimage

    out = labels.copy()
    cube = np.ones((3, 3, 3), bool)
    for label in [int(k) for k in np.unique(labels) if k]:
        pieces, count = ndimage.label(out == label, structure=cube)
        if count < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        for piece in np.argsort(sizes)[:-1] + 1:
            island = pieces == piece
            ring = ndimage.binary_dilation(island, cube) & ~island
            neighbours = out[ring]
            neighbours = neighbours[(neighbours != 0) & (neighbours != label)]
            if not neighbours.size:
                continue
            trial = out.copy()
            trial[island] = np.bincount(neighbours).argmax()
            if keep(trial):
                out = trial
    return out
