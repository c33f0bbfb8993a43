"""TopCoW label ids, variant vectors and vessel measurements computed from a label map.

Every function takes a label map in the project's in-memory order (D, H, W) together with the NIfTI affine
that `volume_io.load_volume` returns, so real TopCoW label maps and phantom label maps are measured by
exactly the same code. Definitions follow the TopCoW challenge (see docs/phantoms.md):

- anterior variant vector [L-A1, Acom, 3rd-A2, R-A1], posterior [L-Pcom, L-P1, R-P1, R-Pcom];
- Pcom, Acom and 3rd-A2 are present when their label exists; an A1 is present when the ACA label touches
  the ICA label of the same side (26-neighbourhood); a P1 is present when the PCA label touches the BA label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError, require

BACKGROUND = 0
BA = 1
R_PCA = 2
L_PCA = 3
R_ICA = 4
R_MCA = 5
L_ICA = 6
L_MCA = 7
R_PCOM = 8
L_PCOM = 9
ACOM = 10
R_ACA = 11
L_ACA = 12
THIRD_A2 = 15
THIRD_A2_ALT = 13

LABEL_NAMES: Dict[int, str] = {
    BA: "BA", R_PCA: "R-PCA", L_PCA: "L-PCA", R_ICA: "R-ICA", R_MCA: "R-MCA", L_ICA: "L-ICA", L_MCA: "L-MCA",
    R_PCOM: "R-Pcom", L_PCOM: "L-Pcom", ACOM: "Acom", R_ACA: "R-ACA", L_ACA: "L-ACA", THIRD_A2: "3rd-A2",
}
ANTERIOR_KEYS = ("L-A1", "Acom", "3rd-A2", "R-A1")
POSTERIOR_KEYS = ("L-Pcom", "L-P1", "R-P1", "R-Pcom")
RADIUS_BIAS_VOXELS = 0.25  # what `centreline_radii` takes off the distance transform
HYPOPLASTIC_WIDTH_MM = 1.0  # a segment narrower than this is hypoplastic (DOMAIN.md): a fetal PCA's thin P1, a thin A1
COMPLETE_CIRCLE = {"anterior": [1, 1, 0, 1], "posterior": [1, 1, 1, 1]}


@dataclass
class VariantVectors:
    """TopCoW variant coding: 1 = segment present, 0 = absent."""

    anterior: List[int] = field(default_factory=lambda: [1, 1, 0, 1])
    posterior: List[int] = field(default_factory=lambda: [1, 1, 1, 1])

    def as_dict(self) -> Dict[str, List[int]]:
        """{"anterior": [...], "posterior": [...]} as TopCoW writes it."""
        return {"anterior": list(self.anterior), "posterior": list(self.posterior)}

    def named(self) -> Dict[str, int]:
        """Each segment by name, e.g. {"L-A1": 1, "Acom": 1, ...}."""
        return {**dict(zip(ANTERIOR_KEYS, self.anterior)), **dict(zip(POSTERIOR_KEYS, self.posterior))}

    @property
    def complete(self) -> bool:
        """True for TopCoW's complete circle, exactly [[1,1,0,1],[1,1,1,1]] (so not with a third A2), as the
        phantoms' `complete` variant and the literature's prevalence count it."""
        return self.as_dict() == COMPLETE_CIRCLE


@dataclass
class Measurements:
    """Geometry of one label map in millimetres; None where the structures needed are absent."""

    radius_mm: Dict[str, float]
    ica_ica_mm: Optional[float]
    acom_to_basilar_tip_mm: Optional[float]
    pcom_length_mm: Dict[str, Optional[float]]
    ica_terminus_anterior_of_tip_mm: Optional[float]
    variants: Dict[str, List[int]]

    def as_dict(self) -> Dict[str, object]:
        """Plain dict for JSON."""
        return asdict(self)


def normalise_labels(labels: np.ndarray) -> np.ndarray:
    """Integer label map as uint8 with the alternative 3rd-A2 id 13 mapped to 15; rejects unknown ids."""
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(f"a label map must be 3D, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        rounded = np.rint(arr)
        if np.abs(arr - rounded).max(initial=0) > 1e-3:
            raise InputError("label map holds fractional values, so it is an intensity image: pass a TopCoW label map "
                             "(whole-number ids 0-15)")
        if rounded.min(initial=0) < 0 or rounded.max(initial=0) > 255:
            raise InputError("label map holds ids outside 0-255 that are not TopCoW labels: pass a TopCoW label map")
        arr = rounded.astype(np.uint8)
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    unknown = sorted(set(present.tolist()) - set(LABEL_NAMES) - {BACKGROUND, THIRD_A2_ALT})
    if unknown:
        raise InputError(f"label map holds ids {unknown} that are not TopCoW labels: pass a TopCoW label map (ids 0-15)")
    if THIRD_A2_ALT in present:
        arr = arr.copy()
        arr[arr == THIRD_A2_ALT] = THIRD_A2
    return arr


def present_labels(labels: np.ndarray) -> List[int]:
    """The label ids present in a (normalised) label map, background excluded."""
    counts = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=256)
    return [int(k) for k in np.flatnonzero(counts) if k != BACKGROUND]


def load_label_map(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Read a TopCoW label NIfTI, refused as `checked_label_map` refuses it: ((D, H, W) uint8 labels, affine)."""
    from .volume_io import load_volume

    data, affine = load_volume(path)
    return checked_label_map(data, path), affine


def checked_label_map(values: np.ndarray, path: Union[str, Path]) -> np.ndarray:
    """The normalised ids of the TopCoW multi-class label map read from `path`, refusing (naming the file) a grey
    image, a binary vessel mask or a map without an ICA: read as TopCoW ids, a mask's vessels would all be the
    basilar artery (id 1), and a map without ICAs would call every A1 absent."""
    from .preprocess import segmentation_values

    if segmentation_values(np.asarray(values, dtype=np.float32)) is None:
        raise InputError(f"label map {path} is a grey image, not a label map (its values are not a few whole-number "
                         "ids in constant regions): pass the TopCoW label map, not the image")
    ids_present = np.unique(np.asarray(values))
    foreground = ids_present[ids_present != BACKGROUND]
    if foreground.size == 0:
        raise InputError(f"label map {path} holds no labels (every voxel is 0): pass the case's TopCoW label map, "
                         "or leave the case out")
    if foreground.size == 1 and (foreground[0] == BA or foreground[0] > max(LABEL_NAMES)):
        raise InputError(f"label map {path} holds only ids 0 and {foreground[0]:g}, so it is a binary vessel mask, not "
                         "a TopCoW multi-class label map: pass the TopCoW label map (ids 0-15), or leave the case out")
    try:
        labels = normalise_labels(values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    ids = set(np.unique(labels).tolist())
    if not ids & {R_ICA, L_ICA}:
        raise InputError(f"label map {path} holds no ICA (TopCoW ids {R_ICA} and {L_ICA}; it holds "
                         f"{sorted(ids)}), so it is not a TopCoW multi-class label map of the circle, or "
                         "its grid cuts the circle off, and every A1 would be called absent: pass the TopCoW label map "
                         "of the whole circle, or leave the case out")
    return labels


def _touches(labels: np.ndarray, a: int, b: int) -> bool:
    """True when a voxel of label `a` has a voxel of label `b` among its 26 neighbours."""
    ndi = require("scipy.ndimage", "TopCoW variant vectors", "scipy")
    points = np.argwhere(labels == a)
    if len(points) == 0:
        return False
    lo = np.maximum(points.min(axis=0) - 1, 0)
    hi = points.max(axis=0) + 2
    box = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if not (box == b).any():
        return False
    grown = ndi.binary_dilation(box == a, structure=np.ones((3, 3, 3), bool))
    return bool((grown & (box == b)).any())


def variant_vectors(labels: np.ndarray) -> VariantVectors:
    """The TopCoW anterior and posterior variant vectors of a (D, H, W) label map."""
    lab = normalise_labels(labels)
    present = set(present_labels(lab))
    anterior = [int(_touches(lab, L_ACA, L_ICA)), int(ACOM in present), int(THIRD_A2 in present),
                int(_touches(lab, R_ACA, R_ICA))]
    posterior = [int(L_PCOM in present), int(_touches(lab, L_PCA, BA)), int(_touches(lab, R_PCA, BA)),
                 int(R_PCOM in present)]
    return VariantVectors(anterior, posterior)


def spacing_dhw(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel size (mm) along the in-memory axes (D, H, W) of a volume with this NIfTI affine."""
    sx, sy, sz = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    return float(sz), float(sx), float(sy)


def _world(points_dhw: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS millimetres of (N, 3) voxel indices in (d, h, w) order."""
    ijk = np.asarray(points_dhw, float)[:, [1, 2, 0]]
    a = np.asarray(affine, float)
    return ijk @ a[:3, :3].T + a[:3, 3]


def radius_per_class(labels: np.ndarray, affine: np.ndarray) -> Dict[str, float]:
    """Median vessel radius (mm) per class: the distance transform of the whole vessel mask along its skeleton,
    corrected as the evaluation's radii are (`centreline_radii`: a quarter voxel less)."""
    ndi = require("scipy.ndimage", "vessel radius measurement", "scipy")
    morphology = require("skimage.morphology", "vessel radius measurement", "scikit-image")
    lab = normalise_labels(labels)
    vessel = lab > 0
    if not vessel.any():
        return {}
    spacing = spacing_dhw(affine)
    distance = ndi.distance_transform_edt(vessel, sampling=spacing)
    skeleton = morphology.skeletonize(vessel).astype(bool)
    out: Dict[str, float] = {}
    for label_id, name in LABEL_NAMES.items():
        radii = centreline_radii(distance, skeleton & (lab == label_id), spacing)
        if radii.size:
            out[name] = round(float(np.median(radii)), 3)
    return out


def centreline_radii(distance_mm: np.ndarray, skeleton: np.ndarray, spacing_dhw: Sequence[float]) -> np.ndarray:
    """Vessel radius (mm) at every skeleton voxel: the distance transform there less a quarter voxel, the one radius
    definition of the evaluation's morphology and of `radius_per_class`. On a cylinder along a grid axis through voxel
    centres, the distance to the nearest background voxel centre overestimates the equal-area radius by 0-0.5
    voxel; the quarter voxel removes that on average (centreline voxels off an oblique vessel's axis read lower)."""
    corrected = distance_mm[skeleton] - RADIUS_BIAS_VOXELS * float(np.mean(spacing_dhw))
    return np.maximum(corrected, 0.0)  # a thin vessel on a grid of thick slices has no negative radius


def contact_points(lab: np.ndarray, a: int, b: Sequence[int]) -> np.ndarray:
    """Voxels of label `a` that touch any label in `b` (26-neighbourhood), as (N, 3) indices."""
    ndi = require("scipy.ndimage", "junction measurement", "scipy")
    other = np.isin(lab, list(b))
    if not other.any():
        return np.zeros((0, 3), int)
    grown = ndi.binary_dilation(other, structure=np.ones((3, 3, 3), bool))
    return np.argwhere(grown & (lab == a))


def basilar_tip(labels: np.ndarray, affine: np.ndarray) -> Optional[np.ndarray]:
    """RAS mm of the basilar tip: BA voxels touching a PCA, else the most superior BA voxel."""
    lab = normalise_labels(labels)
    points = contact_points(lab, BA, (R_PCA, L_PCA))
    if len(points) == 0:
        points = np.argwhere(lab == BA)
        if len(points) == 0:
            return None
        world = _world(points, affine)
        return world[np.argmax(world[:, 2])]
    return _world(points, affine).mean(axis=0)


def ica_terminus(labels: np.ndarray, affine: np.ndarray, side: str) -> Optional[np.ndarray]:
    """RAS mm of the ICA terminus of `side` ('R' or 'L'): ICA voxels touching that side's MCA or ACA."""
    lab = normalise_labels(labels)
    ica, mca, aca = (R_ICA, R_MCA, R_ACA) if side == "R" else (L_ICA, L_MCA, L_ACA)
    points = contact_points(lab, ica, (mca, aca))
    if len(points) == 0:
        points = np.argwhere(lab == ica)
        if len(points) == 0:
            return None
        world = _world(points, affine)
        return world[np.argmax(world[:, 2])]
    return _world(points, affine).mean(axis=0)


def pcom_length(labels: np.ndarray, affine: np.ndarray, side: str) -> Optional[float]:
    """Length (mm) of the Pcom of `side`: extent of its voxels along their principal axis plus one voxel."""
    lab = normalise_labels(labels)
    points = np.argwhere(lab == (R_PCOM if side == "R" else L_PCOM))
    if len(points) < 2:
        return None
    world = _world(points, affine)
    centred = world - world.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    projection = centred @ axis
    return float(projection.max() - projection.min() + np.mean(spacing_dhw(affine)))


def measure(labels: np.ndarray, affine: np.ndarray) -> Measurements:
    """Radius per class, junction distances (ICA-ICA, Acom to basilar tip), Pcom lengths and variant vectors."""
    lab = normalise_labels(labels)
    tip = basilar_tip(lab, affine)
    right, left = ica_terminus(lab, affine, "R"), ica_terminus(lab, affine, "L")
    acom_points = np.argwhere(lab == ACOM)
    acom = _world(acom_points, affine).mean(axis=0) if len(acom_points) else None

    def dist(p: Optional[np.ndarray], q: Optional[np.ndarray]) -> Optional[float]:
        return None if p is None or q is None else round(float(np.linalg.norm(p - q)), 2)

    anterior = None
    if tip is not None and right is not None and left is not None:
        anterior = round(float(0.5 * (right + left)[1] - tip[1]), 2)
    lengths = {side: pcom_length(lab, affine, side) for side in ("R", "L")}
    return Measurements(
        radius_mm=radius_per_class(lab, affine),
        ica_ica_mm=dist(right, left),
        acom_to_basilar_tip_mm=dist(acom, tip),
        pcom_length_mm={k: (None if v is None else round(v, 2)) for k, v in lengths.items()},
        ica_terminus_anterior_of_tip_mm=anterior,
        variants=variant_vectors(lab).as_dict(),
    )
