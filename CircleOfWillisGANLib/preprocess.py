"""One scan -> one volume on a model's grid: read, validate, reorient to RAS, register, resample, crop/pad, normalise.

`cowgan prepare` runs it on every training volume (in worker processes, reporting problems as a reason string);
projection (`cowgan project`, the explorer, Slicer) runs the same code on a patient's scan, so a scan meets the
model exactly as the training data did.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, require
from .files import file_sha256, path_problem, printable_name
from .volume_io import check_spacing, usable_affine

CANONICAL = "RAS"
RAS_AXES_LPS = np.diag([-1.0, -1.0, 1.0])              # direction of a grid on the RAS axes, as SimpleITK (LPS) has it
NORMALISATIONS = ("minmax", "percentile")
DEFAULT_PERCENTILES = (0.5, 99.9)
MIN_SIZE, MAX_SIZE = 8, 2048
MIN_SPACING_MM, MAX_SPACING_MM = 0.05, 10.0
SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
MAX_LABEL_VALUES = 64                                   # label maps hold at most this many whole-number values ...
MIN_LABEL_UNIFORMITY = 0.9                              # ... and are piecewise constant: equal neighbours in >= 90%
MIN_COVERAGE = 0.9                                      # share of the output grid a scan should fill
BACKGROUND_PERCENTILE = 1.0                             # padding intensity: the scan's background, not an outlier
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """How every volume is brought onto the training grid."""

    shape: Tuple[int, int, int] = (32, 128, 128)        # output (D, H, W)
    spacing: Optional[float] = None                     # isotropic output spacing in mm; None keeps the input's
    template: Optional[str] = None                      # register rigidly to this volume and crop its central ROI
    normalisation: str = "minmax"                       # per-volume "minmax" (the reference) or "percentile"
    percentiles: Tuple[float, float] = DEFAULT_PERCENTILES  # low/high percentiles mapped to 0 and 1 ("percentile")
    seed: int = 0                                       # registration sampling seed

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or not all(isinstance(n, (int, np.integer)) and n >= MIN_SIZE for n in self.shape):
            raise InputError(f"the output shape must be three whole numbers of at least {MIN_SIZE} (D, H, W), got "
                             f"{tuple(self.shape)}")
        if self.spacing is not None:
            check_spacing([self.spacing] * 3)
        if self.normalisation not in NORMALISATIONS:
            raise InputError(f"normalisation {self.normalisation!r} is unknown: use one of {', '.join(NORMALISATIONS)}")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise InputError(f"percentiles must satisfy 0 <= LOW < HIGH <= 100, got {low} {high}")


class ScanOnGrid(NamedTuple):
    """A scan brought onto a model's grid: the (D, H, W) volume in [0, 1], its RAS affine and the share of the grid
    the scan fills (the rest is padding)."""

    volume: np.ndarray
    affine: np.ndarray
    coverage: float


class VolumeRejected(Exception):
    """An input file that cannot become a training volume: its message is the reason and, where one fits `prepare`,
    the fix shown to the user; `reason` alone serves callers that name their own fix."""

    def __init__(self, reason: str, fix: str = "", in_folder: bool = False) -> None:
        super().__init__(f"{reason}: {fix}" if fix else reason)
        self.reason = reason
        self.fix = "" if in_folder else fix  # a fix for a file among a folder's (pick other files) helps nowhere else

    def with_fix(self, default_fix: str) -> str:
        """The reason and the fix of the file itself, or the caller's `default_fix` where the rejection names none."""
        return f"{self.reason}: {self.fix or default_fix}"


def is_volume_file(path: Path) -> bool:
    """True for the file types `prepare` reads (NIfTI and NRRD)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in SUFFIXES)


def check_training_shape(shape_dhw: Sequence[int]) -> None:
    """Refuse (as --shape) a grid no generator can be trained on: the generator doubles its grid block by block."""
    if not all(n >= MIN_SIZE and n & (n - 1) == 0 for n in shape_dhw):
        raise InputError(f"--shape {' '.join(map(str, shape_dhw))}: each size must be a power of two of at least "
                         f"{MIN_SIZE} (e.g. 32 128 128, or 16 64 64), as the generator doubles its grid block by block")


def simpleitk() -> Any:
    """SimpleITK, or a MissingDependencyError saying how to install it (Slicer ships it)."""
    return require("SimpleITK", "reading, resampling and registering scans")


def read_canonical(path: Path) -> Any:
    """Read a NIfTI/NRRD file, check it, and reorient it (axes permuted/flipped, no interpolation) to RAS."""
    sitk = simpleitk()
    check_itk_name(path)
    _check_nifti_header(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise itk_rejection(exc) from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise VolumeRejected(f"not 3D (size {image.GetSize()})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeRejected(f"{image.GetNumberOfComponentsPerPixel()} components per voxel; a grey volume is needed")
    size, spacing = image.GetSize(), image.GetSpacing()
    if not all(MIN_SIZE <= s <= MAX_SIZE for s in size):
        raise VolumeRejected(f"size {size} outside {MIN_SIZE}-{MAX_SIZE} voxels per axis")
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise VolumeRejected(f"spacing {tuple(round(s, 4) for s in spacing)} mm outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm")
    if "complex" in image.GetPixelIDTypeAsString():
        raise VolumeRejected("complex-valued; a magnitude image is needed",
                             "save its magnitude (absolute value) instead")
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise VolumeRejected("contains NaN or infinite values")
    _check_nifti_as_stored(path, image)
    if float(values.max()) - float(values.min()) <= 0.0:
        raise VolumeRejected(f"constant (every voxel is {float(values.min()):g})")
    labels = segmentation_values(values)
    if labels is not None:
        raise VolumeRejected(f"a label map, not an image ({len(labels)} whole-number values, {labels[0]:g} to "
                             f"{labels[-1]:g})", "leave it out, or pick the images with --pattern", in_folder=True)
    return sitk.DICOMOrient(image, CANONICAL)


def check_itk_name(path: Path) -> None:
    """Refuse a path that is not valid UTF-8 text: ITK's C++ reader aborts the whole process on one."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise VolumeRejected(f"its name '{printable_name(path.name)}' is not valid UTF-8 text, which ITK cannot open",
                             "rename it with a name of plain letters and digits") from None


def itk_rejection(exc: RuntimeError) -> VolumeRejected:
    """Why ITK could not read a file, from its RuntimeError: a sheared affine named as such, else ITK's last line."""
    if "orthonormal" in str(exc):
        return VolumeRejected("its voxel axes are not perpendicular (a sheared affine, which ITK and 3D Slicer cannot "
                              "place; resample it onto a grid with perpendicular axes first, e.g. with nibabel's "
                              "processing.resample_to_output)")
    return VolumeRejected(f"unreadable ({str(exc).strip().splitlines()[-1][:120]})")


def _check_nifti_header(path: Path) -> None:
    """Refuse a NIfTI file without voxels (an axis of size 0) or whose header places no voxel (affine all zero, not
    finite or singular) before ITK reads it, which would call it no NIfTI file, or fail with a misleading shear
    error, and print its own lines on stderr."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape, affine = tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=float)
    except Exception:  # nibabel raises many types for damaged files; the full read names the damage
        return
    if 0 in shape:
        raise VolumeRejected(f"it holds no voxels (its shape is {shape})", "pass the whole scan, exported again")
    if not usable_affine(affine):
        raise VolumeRejected("its affine is all zero, not finite or singular (the header holds no usable orientation)",
                             "fix its header (sform/qform), e.g. save it again from 3D Slicer, or leave it out")


def segmentation_values(values: np.ndarray) -> Optional[np.ndarray]:
    """The distinct values of a segmentation (a few whole numbers in constant regions), else None.

    Uniformity tells a label map (98-99% of neighbouring voxels equal in TopCoW's and the phantoms') from a grey
    image stored with few intensity levels (about 36% equal at 41 levels), whose noise changes most neighbours."""
    if not np.array_equal(values, np.round(values)):
        return None
    distinct = np.unique(values)
    if len(distinct) > MAX_LABEL_VALUES:
        return None
    return distinct if neighbour_uniformity(values) >= MIN_LABEL_UNIFORMITY else None


def neighbour_uniformity(values: np.ndarray) -> float:
    """Share of face-neighbouring voxel pairs (along every axis) that hold the same value."""
    equal = sum(int(np.count_nonzero(np.diff(values, axis=axis) == 0)) for axis in range(values.ndim))
    pairs = sum(values.size // n * (n - 1) for n in values.shape)
    return equal / pairs


def read_nifti_as_stored(path: Path) -> Optional[Tuple[Any, np.ndarray]]:
    """A NIfTI file's nibabel image and voxels as stored, refusing a truncated or damaged file or one holding NaN or
    infinite values, which SimpleITK's reader would fill or replace with zeros; None for another format."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib

    try:
        image = nib.load(str(path))
        stored = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise VolumeRejected(f"truncated or damaged ({reason})", "copy or export the file again") from None
    if not np.isfinite(stored).all():
        raise VolumeRejected("contains NaN or infinite values")
    return image, stored


def _check_nifti_as_stored(path: Path, image_itk: Any) -> None:
    """SimpleITK's NIfTI reader turns NaN into 0 and fills a truncated .nii.gz with zeros, so NIfTI files are
    also read with nibabel, as stored; and ITK (`image_itk`, as read) may place a volume by its qform or its pixdim
    where nibabel and FSL use its sform, so the two placements must agree. A file with neither form has no
    orientation for them to agree on: it is accepted, as before, with a warning."""
    read = read_nifti_as_stored(path)
    if read is None:
        return
    image = read[0]
    apart = _sform_qform_distance(image)
    if apart > 0.5 * float(min(image.header.get_zooms()[:3])):
        raise VolumeRejected(f"its sform and qform place it {apart:.1f} mm apart and tools differ in which they use "
                             "(make them agree, e.g. `fslorient -copysform2qform`, or save it again from 3D Slicer)")
    if not image.header["sform_code"] and not image.header["qform_code"]:
        log.warning("%s carries no orientation (its sform and qform codes are 0): it is read at its pixdim spacing, "
                    "but tools guess its axes differently, so left/right and front/back cannot be trusted; set its true "
                    "orientation where that matters (e.g. with nibabel: img.set_sform(affine, code=1); "
                    "img.set_qform(affine, code=1))", path.name)
        return
    _check_itk_placement(image, image_itk)


def _check_itk_placement(image: Any, image_itk: Any) -> None:
    """Refuse a NIfTI (with an sform or a qform) that ITK places more than half a voxel from where nibabel and FSL do
    (e.g. an sform-only file whose sform scales disagree with pixdim: ITK warns "unexpected scales in sform" and reads
    pixdim's spacing)."""
    corners = _corners(image.shape[:3])
    apart = float(np.linalg.norm((image.affine - ras_affine(image_itk))[:3] @ corners, axis=0).max())
    voxel = float(np.linalg.norm(image.affine[:3, :3], axis=0).min())
    if apart > 0.5 * voxel:
        itk_spacing = ", ".join(f"{s:g}" for s in image_itk.GetSpacing())
        nib_spacing = ", ".join(f"{s:g}" for s in np.linalg.norm(image.affine[:3, :3], axis=0).round(4))
        raise VolumeRejected(f"ITK (prepare, project, 3D Slicer) places it up to {apart:.1f} mm from where nibabel and "
                             f"FSL do (spacing {itk_spacing} mm against {nib_spacing} mm from the "
                             f"{'sform' if image.header['sform_code'] else 'qform'})",
                             "rewrite its header so that both agree, e.g. with nibabel: img.set_qform(img.affine, "
                             "code=1); nibabel.save(img, path)")


def _corners(shape: Sequence[int]) -> np.ndarray:
    """The homogeneous voxel indices (4, 8) of a grid's eight corners."""
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1)
    return np.vstack([corners, np.ones(corners.shape[1])])


def _sform_qform_distance(image: Any) -> float:
    """How far apart (mm, the most at any corner) a NIfTI's sform and qform put its voxels; 0 unless both are set."""
    sform, sform_code = image.header.get_sform(coded=True)
    qform, qform_code = image.header.get_qform(coded=True)
    if not sform_code or not qform_code:
        return 0.0
    return float(np.linalg.norm((sform - qform)[:3] @ _corners(image.shape[:3]), axis=0).max())


def volume_sha256(path: Path) -> str:
    """sha256 of a volume file; for a detached NRRD header (.nhdr) of the header and its data file together, so that
    the provenance changes when the voxels do."""
    if not path.name.lower().endswith(".nhdr"):
        return file_sha256(path)
    digest = hashlib.sha256(path.read_bytes())
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("data file", "datafile") and value.strip() and not value.strip().startswith("LIST"):
            data = path.parent / value.strip()
            if data.is_file():
                digest.update(data.read_bytes())
    return digest.hexdigest()


def output_grid(reference: Any, shape_dhw: Sequence[int], spacing: Optional[float],
                centre_ras: Optional[Sequence[float]] = None) -> Any:
    """An empty image of `shape_dhw` centred on `reference` (or on the RAS point `centre_ras`, with a spacing): at
    `spacing` mm on the RAS axes when a spacing is given, so a tilted scan is resampled upright as the model's volumes
    lie; else `reference`'s own voxels, cropped."""
    sitk = simpleitk()
    d, h, w = (int(s) for s in shape_dhw)
    size_ijk = np.array([h, w, d])
    ref_spacing = np.array(reference.GetSpacing())
    out_spacing = np.full(3, float(spacing)) if spacing else ref_spacing
    direction = RAS_AXES_LPS if spacing else np.array(reference.GetDirection()).reshape(3, 3)
    centre = np.array(reference.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in reference.GetSize()]))
    if centre_ras is not None:
        centre = np.array([-1.0, -1.0, 1.0]) * np.asarray(centre_ras, float)  # SimpleITK's points are LPS
    if spacing is None:
        start = (np.array(reference.GetSize()) - size_ijk) // 2
        origin = np.array(reference.GetOrigin()) + direction @ (ref_spacing * start)
    else:
        origin = centre - direction @ (out_spacing * (size_ijk - 1) / 2.0)
    grid = sitk.Image([int(s) for s in size_ijk], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in out_spacing])
    grid.SetDirection([float(v) for v in direction.ravel()])
    grid.SetOrigin([float(v) for v in origin])
    return grid


def ras_affine(grid: Any) -> np.ndarray:
    """The NIfTI voxel (i, j, k) -> RAS mm affine of a SimpleITK (LPS) image grid."""
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    affine[:3, :3] = flip @ direction @ np.diag(grid.GetSpacing())
    affine[:3, 3] = flip @ np.array(grid.GetOrigin())
    return affine


def normalise(volume: np.ndarray, method: str, percentiles: Tuple[float, float]) -> Tuple[np.ndarray, Dict[str, float]]:
    """Map intensities to [0, 1]: per-volume min-max, or percentiles clipped; returns the volume and its bounds."""
    if method == "minmax":
        lo, hi = float(volume.min()), float(volume.max())
    else:
        lo, hi = (float(v) for v in np.percentile(volume, percentiles))
    if hi - lo <= 0.0:
        raise VolumeRejected("constant inside the output region of interest")
    scaled = np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return scaled, {"low": lo, "high": hi}


def preprocess_file(path: Path, options: PrepareOptions, template: Any = None) -> Tuple[Optional[np.ndarray], Dict[str, Any]]:
    """(D, H, W) float32 volume in [0, 1] and its provenance record; (None, record with "reason") if rejected."""
    path = Path(path)
    record: Dict[str, Any] = {"source": str(path)}
    try:
        volume, details = _on_grid(path, options, template)
    except VolumeRejected as exc:
        record["reason"] = str(exc)
        return None, record
    record.update(details)
    return volume, record


def _on_grid(path: Path, options: PrepareOptions, template: Any,
             centre_ras: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read, check, register and resample one file onto the options' grid (centred on the scan, or on `centre_ras`
    without a template): (volume, provenance); VolumeRejected."""
    sitk = simpleitk()
    image = read_canonical(path)
    record: Dict[str, Any] = {"sha256": volume_sha256(path), "input_size": list(image.GetSize()),
                              "input_spacing_mm": [round(s, 6) for s in image.GetSpacing()]}
    transform = sitk.Transform(3, sitk.sitkIdentity)
    reference = image
    if template is not None:
        transform, record["registration_metric"] = register_to(template, image, options.seed)
        reference = template
    grid = output_grid(reference, options.shape, options.spacing, centre_ras if template is None else None)
    background = background_intensity(sitk.GetArrayViewFromImage(image))
    resampled = sitk.Resample(image, grid, transform, sitk.sitkLinear, background, sitk.sitkFloat32)
    volume = sitk.GetArrayFromImage(resampled).transpose(0, 2, 1)
    volume, bounds = normalise(volume, options.normalisation, options.percentiles)
    record.update(normalisation=bounds, affine=ras_affine(grid).round(6).tolist(),
                  coverage=round(grid_coverage(image, grid, transform), 4))
    if template is not None:
        record["scan_affine"] = affine_in_scan_space(ras_affine(grid), transform).round(6).tolist()
    return np.ascontiguousarray(volume), record


def affine_in_scan_space(affine: np.ndarray, transform: Any) -> np.ndarray:
    """The RAS affine that puts a volume resampled on a template-space grid (`affine`) where its voxels came from in
    the scan: `transform` (template to scan, rigid, in LPS as SimpleITK registers) applied to the grid."""
    flip = np.diag([-1.0, -1.0, 1.0])

    def to_scan(ras: np.ndarray) -> np.ndarray:
        return flip @ np.array(transform.TransformPoint([float(v) for v in flip @ ras]))

    origin = to_scan(affine[:3, 3])
    out = np.eye(4)
    out[:3, :3] = np.column_stack([to_scan(affine[:3, 3] + affine[:3, k]) - origin for k in range(3)])
    out[:3, 3] = origin
    return out


def model_normalisation(recorded: Any) -> Tuple[str, Tuple[float, float]]:
    """(method, percentiles) from a model's recorded data normalisation (`cowgan export` copies the dataset's), so a
    scan is scaled as that model's training volumes were; per-volume min-max when none is recorded (the reference)."""
    if isinstance(recorded, dict) and recorded.get("method") == "percentile":
        low, high = recorded.get("percentiles", DEFAULT_PERCENTILES)
        return "percentile", (float(low), float(high))
    return "minmax", DEFAULT_PERCENTILES


def background_intensity(values: np.ndarray) -> float:
    """The intensity that pads the grid where the scan does not reach: its 1st percentile, the dark background,
    so that a single dark outlier voxel (a reconstruction artefact) does not make the padding darker than air."""
    return float(np.percentile(values, BACKGROUND_PERCENTILE))


def grid_coverage(image: Any, grid: Any, transform: Any) -> float:
    """Share of `grid`'s voxels (mapped through `transform`) that fall inside `image`; the rest are padding."""
    sitk = simpleitk()
    inside = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(image)
    mapped = sitk.Resample(inside, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return float(sitk.GetArrayViewFromImage(mapped).mean())


def coverage_warning(name: str, record: Dict[str, Any], shape_dhw: Sequence[int],
                     fix: str = "pass the whole scan, not a tighter crop") -> Optional[str]:
    """A one-line warning when a preprocessed scan (its provenance `record`) fills less than MIN_COVERAGE of the
    output grid of `shape_dhw`, else None."""
    coverage = record["coverage"]
    if coverage >= MIN_COVERAGE:
        return None
    d, h, w = shape_dhw
    spacing = np.linalg.norm(np.asarray(record["affine"])[:3, :3], axis=0)
    extent = " x ".join(f"{n * s:.0f}" for n, s in zip((h, w, d), spacing))
    return f"{name} fills only {coverage:.0%} of the {extent} mm output grid; the rest is padded with its background intensity: {fix}"


def register_to(template: Any, image: Any, seed: int) -> Tuple[Any, float]:
    """Rigidly register `image` to `template`, turning SimpleITK failures into a rejection."""
    from .registration import register_rigid

    try:
        return register_rigid(template, image, seed)
    except RuntimeError as exc:
        raise VolumeRejected(f"registration to the template failed ({str(exc).strip().splitlines()[-1][:120]})") from None


def scan_on_model_grid(path: Path, shape_dhw: Sequence[int], spacing_mm: Sequence[float],
                       template: Optional[Path] = None, warn: bool = True, normalisation: Any = None,
                       centre_ras: Optional[Sequence[float]] = None) -> ScanOnGrid:
    """A scan as `cowgan prepare --spacing` makes training volumes for a model of this grid, registered rigidly to
    `template` first when given, as the training data was, and scaled by the model's recorded `normalisation`; logs a
    warning (with `warn`) if it does not fill the grid. Without a template, `centre_ras` (mm) centres the grid on
    that point instead of the scan's centre, e.g. on the labelled circle of a whole-head scan. The affine puts the
    volume over the scan, also after a registration (the volume's voxels then lie in the template's orientation, over
    the patient's anatomy)."""
    path = Path(path)
    check_spacing(spacing_mm)
    problem = path_problem(path) or (None if is_volume_file(path) else "is not a NIfTI or NRRD file")
    if problem:
        raise InputError(f"scan {path} {problem}: pass the scan's .nii, .nii.gz or .nrrd file")
    if max(spacing_mm) - min(spacing_mm) > 1e-3:
        raise InputError(f"the model's spacing {tuple(spacing_mm)} mm is not isotropic; scans are resampled "
                         "isotropically: use a model trained on isotropic data")
    method, percentiles = model_normalisation(normalisation)
    options = PrepareOptions(shape=tuple(int(s) for s in shape_dhw), spacing=float(spacing_mm[0]),
                             template=None if template is None else str(template), normalisation=method,
                             percentiles=percentiles)
    template_image = None
    if template is not None:
        problem = path_problem(Path(template))
        if problem:
            raise InputError(f"template {template} {problem}: pass the template volume's NIfTI or NRRD file")
        try:
            template_image = read_canonical(Path(template))
        except VolumeRejected as exc:
            raise InputError(f"cannot use the template {template}: {exc.with_fix('pass a readable 3D grey volume')}"
                             ) from None
    try:
        volume, record = _on_grid(path, options, template_image, centre_ras)
    except VolumeRejected as exc:
        raise InputError(f"cannot use {path}: "
                         f"{exc.with_fix('pass the grey TOF-MRA image as one readable 3D NIfTI or NRRD file')}") from None
    warning = coverage_warning(path.name, record, options.shape)
    if warning and warn:
        log.warning(warning)
    return ScanOnGrid(volume, np.asarray(record.get("scan_affine", record["affine"]), float), record["coverage"])
