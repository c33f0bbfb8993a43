"""Vessel surfaces from TOF-MRA volumes: a threshold, an iso-surface, smoothing, and mesh files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .checks import finite_number, whole_number
from .errors import InputError, require
from .files import atomic_write
from .volume_io import check_affine

SURFACE_FORMATS = ("vtp", "stl", "obj", "ply")  # file types save_surface writes; the first is the default
VESSEL_RGB = (0.85, 0.25, 0.2)  # the colour vessel surfaces are shown in (explorer, Slicer)
SPACE_TAG, SPACE = "SPACE", "LPS"  # how 3D Slicer marks a mesh file's coordinate system
BRIGHT_TAIL_PERCENTILE = 90.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of `values`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        raise InputError("cannot threshold a constant or empty volume: there is no vessel contrast")
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][int(np.argmax(between[:-1]))])


def vessel_threshold(volume_dhw: np.ndarray) -> float:
    """Default vessel threshold: Otsu on the brightest 10% of voxels, which holds the vessels and the
    brightest tissue; on the whole volume Otsu would split background from tissue instead."""
    v = np.asarray(volume_dhw, dtype=np.float32)
    if v.size == 0 or not np.isfinite(v).all():
        raise InputError("cannot threshold a volume that is empty or holds NaN or infinite values: clean it first")
    tail = v[v >= np.percentile(v, BRIGHT_TAIL_PERCENTILE)]
    return otsu_threshold(tail if tail.min() < tail.max() else v)


def vessel_surface(volume_dhw: np.ndarray, affine: np.ndarray, threshold: Optional[float] = None,
                   smoothing_iterations: int = 15, pass_band: float = 0.1) -> Any:
    """Iso-surface of the vessels in RAS millimetres as vtkPolyData (smoothed, with normals)."""
    vtk = require("vtk", "Vessel surfaces", "vtk")
    from vtk.util.numpy_support import numpy_to_vtk

    v = np.asarray(volume_dhw, dtype=np.float32)
    if v.ndim != 3 or min(v.shape) < 2:
        raise InputError(f"a surface needs a 3D (D, H, W) volume of at least 2 voxels along each axis, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("the volume contains NaN or infinite values: clean it before extracting a surface")
    matrix_values = check_affine(affine)
    level = vessel_threshold(v) if threshold is None else _check_level(threshold, v)
    whole_number(smoothing_iterations, "smoothing iterations")
    finite_number(pass_band, "the smoothing pass band", 0, 2, above_low=True)
    image = vtk.vtkImageData()
    image.SetDimensions(v.shape[1], v.shape[2], v.shape[0])
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(v.transpose(0, 2, 1)).ravel(), deep=True))
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, level)
    contour.ComputeNormalsOff()
    smoother = vtk.vtkWindowedSincPolyDataFilter()
    smoother.SetInputConnection(contour.GetOutputPort())
    smoother.SetNumberOfIterations(int(smoothing_iterations))
    smoother.SetPassBand(pass_band)
    smoother.NormalizeCoordinatesOn()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(matrix_values[r, c]))
    transform = vtk.vtkTransform()
    transform.SetMatrix(matrix)
    to_ras = vtk.vtkTransformFilter()
    to_ras.SetTransform(transform)
    outward = _outward_winding(vtk, smoother if smoothing_iterations > 0 else contour, matrix_values)
    to_ras.SetInputConnection(outward.GetOutputPort())  # `outward` is held: a port does not keep its filter alive
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    # the contour winds every face with its normal towards lower intensity, out of the vessel: normals follow the
    # winding as it is (auto-orientation assumes closed surfaces and turned vessels cut by the volume's edge inside out)
    normals.ConsistencyOff()
    normals.AutoOrientNormalsOff()
    normals.SplittingOff()
    normals.Update()
    surface = vtk.vtkPolyData()
    surface.DeepCopy(normals.GetOutput())
    return surface


def _outward_winding(vtk: Any, source: Any, affine: np.ndarray) -> Any:
    """`source` as is, or with every face's winding reversed where the affine mirrors the voxel grid (negative
    determinant): the mirror would turn the contour's outward winding inward, and vtkTransformFilter keeps faces as
    they are."""
    if np.linalg.det(affine[:3, :3]) > 0:
        return source
    reverse = vtk.vtkReverseSense()
    reverse.SetInputConnection(source.GetOutputPort())
    reverse.ReverseCellsOn()
    reverse.ReverseNormalsOff()
    return reverse


def _check_level(threshold: object, volume: np.ndarray) -> float:
    """A given threshold as a float strictly inside the volume's intensity range, where it cuts a surface."""
    try:
        level = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"the surface threshold must be a number, got {threshold!r}") from None
    lo, hi = float(volume.min()), float(volume.max())
    if not lo < level < hi:  # at the minimum itself, every voxel is inside and no surface is cut
        raise InputError(f"surface threshold {level:g} is not inside the volume's range {lo:g} to {hi:g}, so there is "
                         "no surface: choose a value between them, or leave the threshold out for Otsu's")
    return level


def save_surface(surface: Any, path: Union[str, Path]) -> Path:
    """Write vtkPolyData given in RAS (as vessel_surface makes it) as .vtp, .stl, .obj or .ply, by suffix, atomically.

    The file holds LPS coordinates marked "SPACE=LPS", as 3D Slicer writes models: Slicer reads an unmarked
    mesh as LPS, and ITK-based tools assume LPS, so a RAS file would load mirrored beside its NIfTI volume."""
    vtk = require("vtk", "Saving surfaces", "vtk")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix.lstrip(".") not in SURFACE_FORMATS:
        raise InputError(f"unknown surface format {suffix!r}: use one of {', '.join('.' + f for f in SURFACE_FORMATS)}")
    if not isinstance(surface, vtk.vtkPolyData):
        raise InputError(f"save_surface needs the vtkPolyData that vessel_surface returns, got {type(surface).__name__}")
    lps = _ras_to_lps(vtk, surface)

    def write(tmp: Path) -> None:
        if suffix == ".vtp":
            writer = vtk.vtkXMLPolyDataWriter()
            space = vtk.vtkStringArray()
            space.SetName(SPACE_TAG)
            space.InsertNextValue(SPACE)
            lps.GetFieldData().AddArray(space)
        elif suffix == ".stl":
            writer = vtk.vtkSTLWriter()
            writer.SetHeader(f"CircleOfWillisGAN vessel surface {SPACE_TAG}={SPACE}")
        elif suffix == ".ply":
            writer = vtk.vtkPLYWriter()
            writer.AddComment(f"{SPACE_TAG}={SPACE}")
        else:
            writer = vtk.vtkOBJWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(lps)
        if not writer.Write():
            raise InputError(f"VTK could not write {path}")
        if suffix == ".obj":  # vtkOBJWriter takes no comment: the marker leads the file's opening comment lines
            tmp.write_bytes(f"# {SPACE_TAG}={SPACE}\n".encode() + tmp.read_bytes())

    return atomic_write(path, write)


def _ras_to_lps(vtk, surface):
    """A copy of `surface` with x and y negated (points and normals); a rotation, so faces keep their winding."""
    flip = vtk.vtkTransform()
    flip.Scale(-1.0, -1.0, 1.0)
    transform = vtk.vtkTransformFilter()
    transform.SetTransform(flip)
    transform.SetInputData(surface)
    transform.Update()
    return transform.GetPolyDataOutput()
