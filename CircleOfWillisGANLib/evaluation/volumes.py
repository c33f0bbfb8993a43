"""The volume sets an evaluation compares: NIfTI folders (read-only) or a model's outputs held in memory,
each volume min-max normalised to [0, 1] and identified by a content hash for the feature cache."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..files import file_sha256, path_problem
from ..errors import InputError
from ..preprocess import segmentation_values
from ..volume_io import load_volume, ras_orientation, spacing_of, to_ras, volume_grid

log = logging.getLogger(__name__)

LABEL_NAME = re.compile(r"(^|[_\-.])(label|labels|seg|segmentation|mask)([_\-.]|$)", re.IGNORECASE)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def normalise(volume: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] as the reference's training and evaluation do (a constant volume becomes 0)."""
    v = np.asarray(volume, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    return np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)


def is_label_file(path: Path) -> bool:
    """Label maps beside images are named with label/seg/mask (case_001_label.nii.gz, seg_001.nii.gz...)."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return bool(LABEL_NAME.search(name))


def nifti_files(folder: Path) -> List[Path]:
    """Image NIfTI files directly in `folder`, sorted by name, label maps left out."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not is_label_file(p))


@dataclass
class VolumeItem:
    """One volume: a name to show, where it comes from, and how to read it (normalised)."""

    name: str
    source: str
    loader: Callable[[], Tuple[np.ndarray, np.ndarray]]
    content_hash: str = ""
    _hash: Optional[Callable[[], str]] = None

    def load(self) -> np.ndarray:
        """The min-max normalised (D, H, W) volume."""
        return normalise(self.loader()[0])

    def key(self) -> str:
        """Content hash (file sha256 for files) used by the feature cache."""
        if not self.content_hash and self._hash is not None:
            self.content_hash = self._hash()
        return self.content_hash


@dataclass
class VolumeSet:
    """An ordered set of volumes on one grid, with the grid's shape and the affine of its first volume."""

    label: str
    items: List[VolumeItem]
    shape: Tuple[int, int, int]
    affine: np.ndarray
    notes: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int], label: str) -> "VolumeSet":
        """The items at `indices`, as a new set."""
        return VolumeSet(label, [self.items[i] for i in indices], self.shape, self.affine, list(self.notes))

    def spacing(self) -> Tuple[float, float, float]:
        """Voxel spacing (mm) along NIfTI (x, y, z) = (H, W, D)."""
        return spacing_of(self.affine)


def folder_set(folder: str, label: str) -> VolumeSet:
    """The NIfTI volumes of a folder, turned to the closest RAS layout; every volume must share one grid (checked
    from the headers)."""
    path = Path(folder)
    problem = path_problem(path, folder=True)
    if problem:
        raise InputError(f"{label} folder {path} {problem}: pass a folder of NIfTI volumes (.nii or .nii.gz)")
    files = nifti_files(path)
    if not files:
        raise InputError(f"{label} folder {path} holds no NIfTI volumes (.nii, .nii.gz; label maps are skipped)")
    grids: List[Tuple[Tuple[Tuple[int, int, int], np.ndarray], List[str]]] = []
    for f in files:
        grid = volume_grid(f)
        group = next((names for first, names in grids if same_grid(first, grid)), None)
        if group is None:
            grids.append((grid, [f.name]))
        else:
            group.append(f.name)
    if len(grids) > 1:
        summary = ", ".join(f"{len(names)} of {describe_grid(*grid)} (e.g. {names[0]})" for grid, names in grids)
        raise InputError(f"{label} folder {path} mixes grids: {summary}; bring them to one grid first "
                         "(`cowgan prepare --shape D H W --spacing S` does)")
    shape, affine, ornt = ras_orientation(*grids[0][0])  # features and pictures take left, front and up from RAS
    turned = not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]])
    items = [VolumeItem(f.name, str(f), (lambda f=f: (to_ras(_image(f, label), ornt), affine)),
                        _hash=(lambda f=f: file_sha256(f) + ("-as-ras" if turned else ""))) for f in files]
    return VolumeSet(label, items, shape, affine)


def _image(path: Path, label: str) -> np.ndarray:
    """A volume of a folder set as stored; a label map (whole numbers stored as integers, as TopCoW's and the
    phantoms' are, whatever its name) is refused, and so is a constant real or training volume (a generated one is
    the model's to answer for, and is measured)."""
    import nibabel as nib

    volume = load_volume(path)[0]
    integers = np.issubdtype(nib.load(str(path)).get_data_dtype(), np.integer)
    labels = segmentation_values(volume) if integers else None
    if labels is not None:
        raise InputError(f"{path} in the {label} folder is a label map, not an image ({len(labels)} whole-number values, "
                         f"{labels[0]:g} to {labels[-1]:g}): move it out of the folder, or name it *_label.nii.gz, "
                         "which evaluate leaves out")
    if label != "generated" and not volume.max() > volume.min():
        raise InputError(f"{path} in the {label} folder is constant (every voxel is {float(volume.min()):g}): it shows "
                         "no vessels; remove it or replace it")
    return volume


SPACING_TOLERANCE = 1e-3  # relative spacing difference within which headers describe one grid (writers' float noise)


def check_distinct_files(volumes: VolumeSet, folder: str) -> None:
    """Refuse two byte-identical files in one set, which would count one volume twice; the hashes serve the cache."""
    seen: Dict[str, str] = {}
    for item in volumes.items:
        first = seen.setdefault(item.key(), item.name)
        if first != item.name:
            raise InputError(f"{first} and {item.name} in {folder} are the same file: remove one of them so that no "
                             f"{volumes.label} volume counts twice")


def same_grid(a: Tuple[Sequence[int], np.ndarray], b: Tuple[Sequence[int], np.ndarray]) -> bool:
    """Whether two (shape, affine) grids measure volumes alike: same shape and orientation, and spacings equal
    within SPACING_TOLERANCE (0.4445001 and 0.4444999 mm are one grid, 0.62 and 0.625 mm are not)."""
    import nibabel as nib

    return (tuple(a[0]) == tuple(b[0]) and nib.aff2axcodes(a[1]) == nib.aff2axcodes(b[1])
            and bool(np.allclose(spacing_of(a[1]), spacing_of(b[1]), rtol=SPACING_TOLERANCE, atol=0.0)))


def describe_grid(shape_dhw: Sequence[int], affine: np.ndarray) -> str:
    """Shape, spacing and orientation of a grid in words, with enough digits to tell apart spacings that
    `same_grid` tells apart."""
    import nibabel as nib

    spacing = " x ".join(f"{s:.4g}" for s in spacing_of(affine))
    return f"{'x'.join(map(str, shape_dhw))} voxels (D x H x W) of {spacing} mm, {''.join(nib.aff2axcodes(affine))}"


def array_set(volumes: Sequence[np.ndarray], names: Sequence[str], affine: np.ndarray, label: str,
              source: str) -> VolumeSet:
    """Volumes held in memory (a model's outputs), turned to RAS like a folder's; their hash is the sha256 of the
    float32 bytes."""
    if len(volumes) == 0:
        raise InputError(f"{label} set is empty")
    if len(names) != len(volumes):
        raise InputError(f"{len(volumes)} {label} volumes but {len(names)} names: give one name per volume")
    shapes = {tuple(np.shape(v)) for v in volumes}
    if any(len(s) != 3 for s in shapes):
        raise InputError(f"{label} volumes must each be 3D (D, H, W), got shapes {sorted(shapes)}")
    if len(shapes) != 1:
        raise InputError(f"{label} volumes differ in shape: {sorted(shapes)}")
    shape, affine, ornt = ras_orientation(next(iter(shapes)), affine)
    items = []
    for v, name in zip(volumes, names):
        data = to_ras(np.asarray(v, dtype=np.float32), ornt)
        items.append(VolumeItem(name, source, (lambda d=data: (d, affine)),
                                content_hash=hashlib.sha256(data.tobytes()).hexdigest()))
    return VolumeSet(label, items, shape, np.asarray(affine))


def planned_set(label: str, shape_dhw: Sequence[int], affine: np.ndarray) -> VolumeSet:
    """A set with a grid but no volumes yet (a model's, before it generates), turned to RAS like `array_set`, so
    that `check_same_grid` can refuse it before minutes of generation."""
    shape, ras_affine, _ = ras_orientation(shape_dhw, affine)
    return VolumeSet(label, [], shape, np.asarray(ras_affine))


RESAMPLING_VERSION = 3  # in a resampled volume's cache key: 1 aligned corner voxels, 2 smoothed shrinking axes


def resample_volume(volume: np.ndarray, shape: Sequence[int], steps: Optional[Sequence[float]] = None,
                    window: Optional[Sequence[slice]] = None) -> np.ndarray:
    """`volume` (D, H, W) linearly resampled to `shape` voxels centred on its own centre, `steps` source voxels apart
    (default: over the same field of view), so voxel centres land where they lie in millimetres; only the `window` of
    the output is computed. Plain linear, without anti-aliasing, as `prepare` and `project` resample the real scans:
    the same volume must look the same whichever way it came."""
    v = np.asarray(volume, dtype=np.float32)
    steps = [have / n for have, n in zip(v.shape, shape)] if steps is None else steps
    window = [slice(None)] * 3 if window is None else window
    for axis, (n, step, part) in enumerate(zip(shape, steps, window)):
        v = _linear_along(v, axis, n, step, np.arange(n)[part])
    return v


def _linear_along(v: np.ndarray, axis: int, n: int, step: float, indices: np.ndarray) -> np.ndarray:
    """Samples `indices` of `n` along `axis`, `step` source voxels apart and centred on the source's centre, each
    interpolated linearly between the two nearest voxel centres (the edge voxel's value beyond the outer centres)."""
    have = v.shape[axis]
    position = np.clip((have - 1) / 2.0 + (indices - (n - 1) / 2.0) * step, 0.0, have - 1.0)
    below = np.minimum(np.floor(position).astype(np.intp), have - 2)
    shape = [1, 1, 1]
    shape[axis] = len(indices)
    weight = (position - below).astype(np.float32).reshape(shape)
    return np.take(v, below, axis) * (1.0 - weight) + np.take(v, below + 1, axis) * weight


def resampled(volume_set: VolumeSet, shape: Tuple[int, int, int], affine: np.ndarray) -> VolumeSet:
    """The set resampled onto `shape` by `resample_volume` (done only when the user asks, with a note in the report)."""
    items = []
    for item in volume_set.items:
        def loader(item: VolumeItem = item) -> Tuple[np.ndarray, np.ndarray]:
            return resample_volume(item.loader()[0], shape), affine

        items.append(VolumeItem(item.name, item.source, loader, _hash=(
            lambda item=item: f"{item.key()}-resampled{RESAMPLING_VERSION}-to-{'x'.join(map(str, shape))}")))
    note = (f"{volume_set.label} volumes were resampled trilinearly from {'x'.join(map(str, volume_set.shape))} "
            f"to {'x'.join(map(str, shape))} (D x H x W) over the same field of view to match the real grid, "
            "without smoothing, as `prepare` resamples real scans")
    notes = volume_set.notes + ([note] if note not in volume_set.notes else [])  # a planned set's note is kept
    return VolumeSet(volume_set.label, items, tuple(shape), np.asarray(affine), notes)


FIELD_OF_VIEW_TOLERANCE = 0.02  # relative difference of extents (mm) at which two sets show other anatomy


def check_same_grid(reference: VolumeSet, other: VolumeSet, resample: bool) -> VolumeSet:
    """`other` on the reference grid: unchanged if it already is, resampled if the user asked, else an error. Both
    sets are RAS already (`folder_set` and `array_set` turn them), so left is left in both."""
    extents = [np.multiply(spacing_of(v.affine), [v.shape[1], v.shape[2], v.shape[0]]) for v in (reference, other)]
    if not np.allclose(extents[0], extents[1], rtol=FIELD_OF_VIEW_TOLERANCE):
        note = (f"the {other.label} volumes' headers give a {' x '.join(f'{e:.0f}' for e in extents[1])} mm field of "
                f"view, the {reference.label} volumes' {' x '.join(f'{e:.0f}' for e in extents[0])} mm; all are measured "
                f"with the {reference.label} grid's spacing, so check that both show the same anatomy (headers "
                "written without the true spacing, e.g. an identity affine, cause this)")
        if note not in other.notes:  # checked again by evaluate() after the command line did
            log.warning(note)
            other = dataclasses.replace(other, notes=other.notes + [note])
    if other.shape == reference.shape:
        return other
    if not resample:
        raise InputError(f"{other.label} volumes are {'x'.join(map(str, other.shape))} but {reference.label} volumes are "
                         f"{'x'.join(map(str, reference.shape))} (D x H x W): metrics would compare different anatomy "
                         "scales; pass --resample to resample them onto the real grid, or use matching data")
    return resampled(other, reference.shape, reference.affine)


def left_is_low_h(affine: np.ndarray) -> bool:
    """Whether the subject's left lies at low H (NIfTI i) indices: true when i runs towards the right (+x in RAS)."""
    return bool(np.asarray(affine)[0, 0] >= 0) if abs(np.asarray(affine)[0, 0]) > 1e-9 else True
