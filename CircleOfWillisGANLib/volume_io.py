"""Reading and writing volumes as NIfTI with the project's axis convention.

Arrays in memory are (D, H, W): D axial slices of H x W voxels, as the networks produce them. On disk the
NIfTI array is (H, W, D), the order the reference writes, with an affine mapping voxel (i, j, k) = (h, w, d)
to RAS millimetres: i runs towards the subject's right (x), j towards anterior (y), k towards superior (z).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Tuple, Union

import numpy as np

from .checks import whole_number
from .errors import InputError
from .files import atomic_write, path_problem

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_SPACING_MM = (0.62, 0.62, 0.62)
QFORM_CODE = 2  # NIfTI "aligned": the code nibabel gives the sform
QFORM_TOLERANCE_MM = 1e-4  # a qform further than this from the affine would place the volume elsewhere
SPACING_RANGE_MM = (0.01, 100.0)  # beyond this a grid is not an image of vessels (and NIfTI headers overflow)


def check_spacing(spacing_mm: Sequence[float]) -> Tuple[float, float, float]:
    """`spacing_mm` as three millimetres (x, y, z) within SPACING_RANGE_MM, or an InputError (NaN included)."""
    low, high = SPACING_RANGE_MM
    rule = f"the voxel spacing must be three positive millimetres (x, y, z) from {low:g} to {high:g}"
    try:
        values = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"{rule}, got {spacing_mm!r}") from None
    if len(values) != 3 or not all(low <= s <= high for s in values):
        raise InputError(f"{rule}, got {list(values)}")
    return values


def default_affine(shape_dhw: Sequence[int], spacing_mm: Sequence[float] = DEFAULT_SPACING_MM) -> np.ndarray:
    """RAS+ affine for a (D, H, W) grid with (x, y, z) spacing, centred on the origin."""
    if isinstance(shape_dhw, (str, bytes)) or not hasattr(shape_dhw, "__len__") or len(shape_dhw) != 3:
        raise InputError(f"a grid needs three sizes (D, H, W), got {shape_dhw!r}")
    d, h, w = (whole_number(n, "every grid size", 1) for n in shape_dhw)
    spacing_mm = check_spacing(spacing_mm)
    affine = np.diag([spacing_mm[0], spacing_mm[1], spacing_mm[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array([h, w, d], dtype=float) - 1.0) / 2.0)
    return affine


def spacing_of(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel spacing (mm) along the NIfTI axes i, j, k of an affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def usable_affine(matrix: np.ndarray) -> bool:
    """Whether a 4 x 4 voxel-to-RAS matrix places voxels: finite, its 3 x 3 part invertible."""
    return bool(np.isfinite(matrix).all()) and abs(float(np.linalg.det(matrix[:3, :3]))) >= 1e-12


def check_affine(affine: Any) -> np.ndarray:
    """`affine` as a finite, invertible 4 x 4 voxel-to-RAS matrix, or an InputError."""
    try:
        matrix = np.asarray(affine, dtype=float)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape != (4, 4) or not usable_affine(matrix):
        raise InputError("the affine must be a finite, invertible 4 x 4 voxel-to-RAS matrix "
                         f"(e.g. default_affine(shape)), got {np.shape(affine)}")
    return matrix


def save_volume(path: PathLike, volume_dhw: np.ndarray, affine: np.ndarray, dtype: type = np.float32) -> Path:
    """Write a (D, H, W) volume as NIfTI with array axes (H, W, D), atomically; values must fit `dtype`."""
    import nibabel as nib

    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"a volume is saved to a file path (str or Path), got {type(path).__name__}")
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"cannot save a volume as {Path(path).name}: use a .nii or .nii.gz file name")
    volume_dhw = np.asarray(volume_dhw)
    if volume_dhw.ndim != 3 or 0 in volume_dhw.shape:
        raise InputError(f"a volume must be 3D (D, H, W) with at least one voxel, got shape {volume_dhw.shape}")
    if volume_dhw.dtype.kind not in "biuf":
        raise InputError(f"a volume must hold real numbers, got dtype {volume_dhw.dtype}")
    if not np.isfinite(volume_dhw).all():
        raise InputError(f"the volume for {Path(path).name} contains NaN or infinite values: nothing was written")
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise InputError(f"unknown volume dtype {dtype!r}: use float32, int16 or uint8") from None
    if target.kind in "iu":
        info = np.iinfo(target)
        if not (np.array_equal(volume_dhw, np.round(volume_dhw)) and info.min <= volume_dhw.min()
                and volume_dhw.max() <= info.max):
            raise InputError(f"storing this volume as {target} would change its values (they are not whole numbers "
                             f"from {info.min} to {info.max}): save it as float32")
    elif target.kind != "f" or target.itemsize < 4:
        raise InputError(f"volumes are stored as float or integer NIfTI, not {target}: use float32, int16 or uint8")
    elif volume_dhw.size and np.abs(volume_dhw).max() > np.finfo(target).max:  # would be written as infinite
        raise InputError(f"the volume for {Path(path).name} holds values beyond {target}'s range (up to "
                         f"{np.abs(volume_dhw).max():.3g}): nothing was written; rescale it or save it as float64")
    image = nib.Nifti1Image(np.ascontiguousarray(volume_dhw.transpose(1, 2, 0)).astype(target), check_affine(affine))
    _set_qform(image)
    image.header.set_xyzt_units("mm")
    return atomic_write(path, lambda tmp: nib.save(image, str(tmp)))


def _set_qform(image: Any) -> None:
    """Store the affine as the qform too (code "aligned", as the sform), so tools that read only the qform see the
    orientation; an affine with shear, which a qform cannot hold, leaves the qform unset rather than different."""
    affine = image.affine
    image.set_qform(affine, code=QFORM_CODE)
    if not np.allclose(image.get_qform(), affine, atol=QFORM_TOLERANCE_MM):
        image.set_qform(None, code=0)


def load_volume(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume written in this convention: returns ((D, H, W) float32 array, affine)."""
    image = _open_nifti(path)
    try:
        data = np.squeeze(np.asarray(image.dataobj, dtype=np.float32))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"cannot read volume {path} ({exc}): pass a valid NIfTI file (.nii or .nii.gz)") from exc
    if data.ndim != 3:
        raise InputError(f"volume {path} has shape {data.shape}; a single 3D volume is needed")
    if not np.isfinite(data).all():
        raise InputError(f"volume {path} contains NaN or infinite values: fix the file or leave it out")
    return np.ascontiguousarray(data.transpose(2, 0, 1)), np.asarray(image.affine)


def ras_orientation(shape_dhw: Sequence[int], affine: np.ndarray) -> Tuple[Tuple[int, int, int], np.ndarray, Any]:
    """The (D, H, W) shape and affine of a grid turned to the closest RAS layout (axes permuted and flipped, no
    interpolation), and the nibabel orientation that `to_ras` applies to its volumes."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    d, h, w = shape_dhw
    ras_affine = np.asarray(affine) @ nib.orientations.inv_ornt_aff(ornt, (h, w, d))
    turned = [int((h, w, d)[int(axis)]) for axis in np.argsort(ornt[:, 0])]
    return (turned[2], turned[0], turned[1]), ras_affine, ornt


def to_ras(volume_dhw: np.ndarray, ornt: Any) -> np.ndarray:
    """A (D, H, W) volume turned by `ras_orientation`'s orientation: its array axes then run R, A, S as NIfTI
    (i, j, k)."""
    import nibabel as nib

    turned = nib.orientations.apply_orientation(np.asarray(volume_dhw).transpose(1, 2, 0), ornt)
    return np.ascontiguousarray(turned.transpose(2, 0, 1))


def volume_grid(path: PathLike) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """The (D, H, W) shape and affine of a NIfTI volume from its header alone (the voxels are not read)."""
    image = _open_nifti(path)
    shape = tuple(int(s) for s in image.shape if s != 1)
    if len(shape) != 3:
        raise InputError(f"volume {path} has shape {image.shape}; a single 3D volume is needed")
    h, w, d = shape
    return (d, h, w), np.asarray(image.affine)


def _open_nifti(path: PathLike) -> Any:
    import nibabel as nib

    problem = path_problem(path)
    if problem:
        raise InputError(f"volume {path} {problem}: pass a NIfTI file (.nii or .nii.gz)")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"cannot read volume {path} ({exc}): pass a valid NIfTI file (.nii or .nii.gz)") from exc
    _check_header(path, image)
    return image


def _check_header(path: PathLike, image: Any) -> None:
    """Refuse a header whose voxels cannot be placed (affine not finite or singular) or are complex numbers, which
    every later step would otherwise misread or fail on with a traceback."""
    if not usable_affine(np.asarray(image.affine, dtype=float)):
        raise InputError(f"volume {path} has an affine that is all zero, not finite or singular: its header holds "
                         "no usable orientation; fix its header (sform/qform) or leave the file out")
    if np.dtype(image.get_data_dtype()).kind == "c":
        raise InputError(f"volume {path} is complex-valued; a magnitude image is needed: save its magnitude")
