"""Reading and writing volumes as NIfTI with the project's axis convention.

Arrays in memory are (D, H, W): D axial slices of H x W voxels, as the networks produce them. On disk the
NIfTI array is (H, W, D), the order the reference writes, with an affine mapping voxel (i, j, k) = (h, w, d)
to RAS millimetres: i runs towards the subject's right (x), j towards anterior (y), k towards superior (z).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .files import atomic_write

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_SPACING_MM = (0.62, 0.62, 0.62)


def check_spacing(spacing_mm: Sequence[float]) -> Tuple[float, float, float]:
    """`spacing_mm` as three positive, finite millimetres (x, y, z), or an InputError (NaN included)."""
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(0 < s < math.inf for s in values):
        raise InputError(f"the voxel spacing must be three positive millimetres (x, y, z), got {list(values)}")
    return values


def default_affine(shape_dhw: Sequence[int], spacing_mm: Sequence[float] = DEFAULT_SPACING_MM) -> np.ndarray:
    """RAS+ affine for a (D, H, W) grid with (x, y, z) spacing, centred on the origin."""
    d, h, w = shape_dhw
    affine = np.diag([float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]), 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array([h, w, d], dtype=float) - 1.0) / 2.0)
    return affine


def spacing_of(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel spacing (mm) along the NIfTI axes i, j, k of an affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def save_volume(path: PathLike, volume_dhw: np.ndarray, affine: np.ndarray, dtype: type = np.float32) -> Path:
    """Write a (D, H, W) volume as NIfTI with array axes (H, W, D), atomically."""
    import nibabel as nib

    volume_dhw = np.asarray(volume_dhw)
    if volume_dhw.ndim != 3:
        raise InputError(f"a volume must be 3D (D, H, W), got shape {volume_dhw.shape}")
    image = nib.Nifti1Image(np.ascontiguousarray(volume_dhw.transpose(1, 2, 0)).astype(dtype), np.asarray(affine, float))
    image.header.set_xyzt_units("mm")
    return atomic_write(path, lambda tmp: nib.save(image, str(tmp)))


def load_volume(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume written in this convention: returns ((D, H, W) float32 array, affine)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"volume {path} does not exist: check the path")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"cannot read volume {path} ({exc}): pass a valid NIfTI file (.nii or .nii.gz)") from exc
    data = np.squeeze(data)
    if data.ndim != 3:
        raise InputError(f"volume {path} has shape {data.shape}; a single 3D volume is needed")
    return np.ascontiguousarray(data.transpose(2, 0, 1)), np.asarray(image.affine)
