"""Pictures of a case for raters outside Slicer: MIPs, one slice, a depth-shaded vessel surface.

Every case goes through the same functions with the same fixed window (the display volumes are uint8 on one
grid), so the pictures differ only by the voxels, never by how they were drawn.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..mip import GAP, mip_panel
from ..surface import vessel_threshold

WINDOW = (0.0, 255.0)
SCALE = 2.0


def slice_picture(volume_dhw: np.ndarray, index: int, scale: float = SCALE) -> np.ndarray:
    """Axial slice `index`, oriented as the axial MIP (patient's right on the left, anterior up)."""
    v = np.asarray(volume_dhw)
    index = int(np.clip(index, 0, v.shape[0] - 1))
    image = v[index].T[::-1, ::-1].astype(np.uint8)
    return np.kron(image, np.ones((int(scale), int(scale)), dtype=np.uint8))


def surface_picture(volume_dhw: np.ndarray, scale: float = SCALE) -> np.ndarray:
    """The vessel iso-surface seen from above, shaded by depth and slope (a z-buffer rendering)."""
    v = np.asarray(volume_dhw, dtype=np.float32)
    inside = v >= vessel_threshold(v)
    d = v.shape[0]
    hit = inside[::-1].argmax(axis=0)
    seen = inside.any(axis=0)
    height = np.where(seen, d - hit, 0).astype(np.float32)
    gy, gx = (_slope_within(height, seen, axis) for axis in (0, 1))
    light = np.clip(0.75 - 0.35 * gx - 0.35 * gy, 0.1, 1.0)
    shade = np.where(seen, (0.35 + 0.65 * height / d) * light, 0.0)
    image = (np.clip(shade, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).T[::-1, ::-1]
    return np.kron(image, np.ones((int(scale), int(scale)), dtype=np.uint8))


def _slope_within(height: np.ndarray, seen: np.ndarray, axis: int) -> np.ndarray:
    """Central differences of `height` along `axis` that use only vessel pixels (one-sided at a vessel's edge, 0
    where a pixel has no vessel neighbour), so the black background does not shade thin vessels as steep walls."""
    def step(shift: int) -> tuple:
        neighbour = np.roll(height, shift, axis)
        ok = np.roll(seen, shift, axis) & seen
        edge = [slice(None)] * height.ndim
        edge[axis] = slice(-1, None) if shift == -1 else slice(0, 1)
        ok[tuple(edge)] = False  # np.roll wraps around: the far side is no neighbour
        return (neighbour - height) * -shift, ok

    ahead, ahead_ok = step(-1)
    behind, behind_ok = step(1)
    both = ahead_ok & behind_ok
    return np.where(both, (ahead + behind) / 2.0, np.where(ahead_ok, ahead, np.where(behind_ok, behind, 0.0)))


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images next to each other, top-aligned, on black."""
    height = max(i.shape[0] for i in images)
    width = sum(i.shape[1] for i in images) + GAP * (len(images) - 1)
    out = np.zeros((height, width), dtype=np.uint8)
    x = 0
    for image in images:
        out[: image.shape[0], x: x + image.shape[1]] = image
        x += image.shape[1] + GAP
    return out


def case_picture(volume_dhw: np.ndarray, display: str, slice_index: int, spacing_mm: Sequence[float]) -> np.ndarray:
    """What a standalone rater sees for one display mode ('mip', 'slices', 'surface' or 'all')."""
    parts: List[np.ndarray] = []
    if display in ("mip", "all"):
        parts.append(mip_panel(volume_dhw, spacing_mm, scale=SCALE, window=WINDOW))
    if display in ("slices", "all"):
        parts.append(slice_picture(volume_dhw, slice_index))
    if display in ("surface", "all"):
        parts.append(surface_picture(volume_dhw))
    return side_by_side(parts)
