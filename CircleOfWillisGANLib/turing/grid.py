"""One display grid and one intensity normalisation for every case, whatever its source.

Each volume is turned to RAS orientation, resampled to the grid's spacing, centre-cropped or padded to the
grid's shape, scaled by its own robust intensity range and quantised to 8 bits, so that neither size,
orientation, spacing, dtype nor intensity range can tell a real volume from a generated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..evaluation.volumes import resample_volume
from ..volume_io import DEFAULT_SPACING_MM, default_affine

LEVELS = 255


@dataclass(frozen=True)
class DisplayGrid:
    """Target shape (D, H, W), spacing (x, y, z) mm and the percentiles mapped to black and white."""

    shape_dhw: Tuple[int, int, int] = (32, 128, 128)
    spacing_mm: Tuple[float, float, float] = DEFAULT_SPACING_MM
    low_percentile: float = 0.0
    high_percentile: float = 99.9

    def affine(self) -> np.ndarray:
        """The one affine every displayed case carries."""
        return default_affine(self.shape_dhw, self.spacing_mm)

    def describe(self) -> Dict[str, Any]:
        """JSON-ready description, identical for every case."""
        return {"shape_dhw": list(self.shape_dhw), "spacing_mm": [float(s) for s in self.spacing_mm],
                "intensity": f"percentile {self.low_percentile:g} -> 0, percentile {self.high_percentile:g} -> {LEVELS}",
                "dtype": "uint8"}


def grid_like(shape_dhw: Sequence[int], affine: np.ndarray) -> DisplayGrid:
    """A display grid with the shape and spacing of a given volume (usually the model's output grid)."""
    return DisplayGrid(tuple(int(s) for s in shape_dhw), tuple(round(s, 6) for s in sorted_spacing(affine)))  # type: ignore[arg-type]


def sorted_spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    """Spacing (mm) along x, y, z once the volume is turned to RAS."""
    import nibabel.orientations as orient

    affine = np.asarray(affine, float)
    ornt = orient.io_orientation(affine)
    spacing = [0.0, 0.0, 0.0]
    for axis, (ras_axis, _) in enumerate(ornt):
        spacing[int(ras_axis)] = float(np.linalg.norm(affine[:3, axis]))
    return tuple(spacing)  # type: ignore[return-value]


def to_display(volume_dhw: np.ndarray, affine: np.ndarray, grid: DisplayGrid) -> np.ndarray:
    """Reorient, resample, crop or pad, normalise and quantise one volume: uint8 (D, H, W) on `grid`."""
    shown, dst = _shown(volume_dhw, affine, grid)
    lo, hi = _intensity_range(shown, grid)
    out = np.full(tuple(grid.shape_dhw), lo, dtype=np.float32)
    out[dst] = shown
    scaled = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
    return np.floor(scaled * LEVELS + 0.5).astype(np.uint8)


def check_displayable(volume_dhw: np.ndarray, affine: np.ndarray, grid: DisplayGrid) -> None:
    """Raise the InputError `to_display` would raise for this volume on `grid` (not 3D, not finite, constant where
    it is shown), so that every candidate can be checked before any is drawn; only the shown part is resampled."""
    _intensity_range(_shown(volume_dhw, affine, grid)[0], grid)


def _shown(volume_dhw: np.ndarray, affine: np.ndarray, grid: DisplayGrid) -> Tuple[np.ndarray, Tuple[slice, ...]]:
    """The part of a volume that `grid` shows, turned to RAS and resampled to the grid's spacing, and where it lands
    in the grid (larger volumes are centre-cropped, smaller ones centre-padded)."""
    v = np.asarray(volume_dhw, dtype=np.float32)
    if v.ndim != 3 or min(v.shape) < 2:
        raise InputError(f"a case volume must be 3D with at least 2 voxels per axis, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("a case volume contains NaN or infinite values: clean it before building a session")
    affine = np.asarray(affine, float)
    v, spacing = _to_ras(v, affine), sorted_spacing(affine)
    src, dst = _centre_window(_display_size(v.shape, spacing, grid.spacing_mm), grid.shape_dhw)
    return _resample(v, spacing, grid.spacing_mm, src), dst


def _intensity_range(shown: np.ndarray, grid: DisplayGrid) -> Tuple[float, float]:
    """The values mapped to black and white, from what is shown only: a scan's cropped-away head must not set them."""
    lo, hi = (float(x) for x in np.percentile(shown, [grid.low_percentile, grid.high_percentile]))
    if not hi > lo:
        hi = float(shown.max())
        if not hi > lo:
            raise InputError("a case volume is constant where it is shown: it has no vessels to show; remove it "
                             "from the source folder")
    return lo, hi


def _to_ras(v_dhw: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Flip and permute the NIfTI axes (H, W, D) so that they run right, anterior, superior."""
    import nibabel.orientations as orient

    transform = orient.ornt_transform(orient.io_orientation(affine), orient.axcodes2ornt(("R", "A", "S")))
    hwd = orient.apply_orientation(v_dhw.transpose(1, 2, 0), transform)
    return np.ascontiguousarray(hwd.transpose(2, 0, 1))


def display_coverage(shape_dhw: Sequence[int], affine: np.ndarray, grid: DisplayGrid) -> float:
    """Share of the display grid that a volume of this shape and affine fills once on it; the rest is padding."""
    import nibabel.orientations as orient

    d, h, w = shape_dhw
    xyz = [0, 0, 0]
    for n, (ras_axis, _) in zip((h, w, d), orient.io_orientation(np.asarray(affine, float))):
        xyz[int(ras_axis)] = n
    size = _resampled_size((xyz[2], xyz[0], xyz[1]), sorted_spacing(affine), grid.spacing_mm)
    return float(np.prod([min(1.0, have / want) for have, want in zip(size, grid.shape_dhw)]))


def _resampled_size(shape_dhw: Sequence[int], spacing_xyz: Sequence[float],
                    target_xyz: Sequence[float]) -> Tuple[int, int, int]:
    """(D, H, W) of a RAS volume of `shape_dhw` resampled from `spacing_xyz` to `target_xyz`."""
    (d, h, w), (sx, sy, sz), (tx, ty, tz) = shape_dhw, spacing_xyz, target_xyz
    return max(2, round(d * sz / tz)), max(2, round(h * sx / tx)), max(2, round(w * sy / ty))


def _display_size(shape_dhw: Sequence[int], spacing_xyz: Sequence[float],
                  target_xyz: Sequence[float]) -> Tuple[int, int, int]:
    """(D, H, W) of a RAS volume once on the target spacing; a volume already on it keeps its shape."""
    if np.allclose(spacing_xyz, target_xyz, rtol=1e-4):
        return tuple(int(n) for n in shape_dhw)  # type: ignore[return-value]
    return _resampled_size(shape_dhw, spacing_xyz, target_xyz)


def _resample(v_dhw: np.ndarray, spacing_xyz: Sequence[float], target_xyz: Sequence[float],
              window: Tuple[slice, ...]) -> np.ndarray:
    """The `window` of the volume linearly resampled to the target spacing over its own field of view by the
    evaluation's resampler, each output voxel centre where it lies in the source, so that distances are kept; a
    volume already on the target spacing is only cut. No anti-aliasing: `cowgan prepare` makes the model's training
    data by plain linear resampling, and real cases must look as those do."""
    if np.allclose(spacing_xyz, target_xyz, rtol=1e-4):
        return v_dhw[window]
    (sx, sy, sz), (tx, ty, tz) = spacing_xyz, target_xyz
    size = _resampled_size(v_dhw.shape, spacing_xyz, target_xyz)
    return resample_volume(v_dhw, size, (tz / sz, tx / sx, ty / sy), window)


def _centre_window(have_dhw: Sequence[int], want_dhw: Sequence[int]) -> Tuple[Tuple[slice, ...], Tuple[slice, ...]]:
    """Slices of a volume of shape `have_dhw` that a centred grid of `want_dhw` shows, and where they land in it
    (larger axes are centre-cropped, smaller ones centre-padded)."""
    src, dst = [], []
    for have, want in zip(have_dhw, want_dhw):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    return tuple(src), tuple(dst)
