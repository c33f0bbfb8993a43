"""One phantom: sample a subject, build its vessels, rasterise them and form the TOF image."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from ..topcow import ACOM, L_PCA, R_PCA, variant_vectors
from ..volume_io import DEFAULT_SPACING_MM, check_spacing, default_affine
from .anatomy import AnatomyConfig, build_vessels, flow_saturation, place, sample_landmarks, sample_pose
from .raster import Grid, Tube, merge_label_islands, rasterise
from .tof import ImageConfig, brightness_along, render, sample_image_params
from .variants import VariantPrevalence, Variants, check_forced, sample_variants

DEFAULT_SHAPE = (32, 128, 128)
MAX_VOXELS = 256 * 512 * 512
BYTES_PER_VOXEL = 53  # peak memory of one phantom per voxel beyond the process itself, measured at 64 x 256 x 256
ACOM_LABEL_PRIORITY_MM = 0.6
PCA_LABEL_PRIORITY_MM = 0.3
"""Where labels overlap, the short Acom keeps its own, and the PCA keeps the P1/P2 junction against a thick (fetal)
Pcom, so that neither class is cut in two."""
LABEL_MARGIN_VOXELS = 0.25
"""Voxels whose lumen fraction is at least 1/4 are labelled, as manual annotations of TOF-MRA do."""
SeedLike = Union[int, Tuple[int, int], np.random.Generator]


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that defines a phantom population: grid, variant table, anatomy and image ranges."""

    shape: Tuple[int, int, int] = DEFAULT_SHAPE
    spacing_mm: Tuple[float, float, float] = DEFAULT_SPACING_MM
    prevalence: VariantPrevalence = field(default_factory=VariantPrevalence)
    force: Tuple[str, ...] = ()
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    image: ImageConfig = field(default_factory=ImageConfig)

    def __post_init__(self) -> None:
        if (not isinstance(self.shape, (tuple, list)) or len(self.shape) != 3
                or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in self.shape)
                or any(n < 8 or n > 1024 for n in self.shape)):
            raise InputError(f"phantom shape {self.shape} is invalid: give three sizes D H W between 8 and 1024")
        voxels = int(np.prod([int(n) for n in self.shape]))
        if voxels > MAX_VOXELS:
            raise InputError(f"phantom shape {tuple(int(n) for n in self.shape)} has {voxels / 1e6:.0f} million voxels and "
                             f"would need about {voxels * BYTES_PER_VOXEL / 2**30:.0f} GiB of memory: use at most "
                             f"{MAX_VOXELS / 1e6:.0f} million voxels (e.g. 256 512 512)")
        numbers = isinstance(self.spacing_mm, (tuple, list)) and all(
            isinstance(s, (int, float, np.number)) and not isinstance(s, bool) for s in self.spacing_mm)
        if numbers and any(not 0.05 <= s <= 5.0 for s in self.spacing_mm):  # one range (NaN too), not check_spacing's
            raise InputError(f"phantom spacing {tuple(self.spacing_mm)} is invalid: give spacings (mm) between 0.05 and 5")
        check_spacing(self.spacing_mm)
        if isinstance(self.force, str) or not isinstance(self.force, (tuple, list)):
            raise InputError(f"force must be a list of variant names, e.g. ['{self.force}'], got {self.force!r}")
        check_forced(self.force)

    def affine(self) -> np.ndarray:
        """The RAS affine of the phantom grid (centred on the origin)."""
        return default_affine(self.shape, self.spacing_mm)

    def as_dict(self) -> Dict[str, Any]:
        """The configuration as plain JSON-ready data."""
        return asdict(self)


@dataclass
class Phantom:
    """A generated subject: image (D, H, W) float32 in [0, 1], TopCoW labels uint8, parameters and variants."""

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    params: Dict[str, Any]
    variants: Variants
    topcow_vectors: Dict[str, list]


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of case `index` of a set with `seed`: depends on nothing else."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _rng(seed_or_rng: SeedLike) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    whole = (int, np.integer)
    pair = isinstance(seed_or_rng, tuple) and len(seed_or_rng) == 2
    parts = seed_or_rng if pair else (seed_or_rng, 0)
    if all(isinstance(n, whole) and not isinstance(n, bool) and int(n) >= 0 for n in parts):
        return case_rng(int(parts[0]), int(parts[1]))
    raise InputError(f"phantom seed {seed_or_rng!r} is invalid: give a non-negative integer, a (seed, case index) "
                     "pair of them, or a numpy Generator")


def _label_priority(label: int) -> float:
    return {ACOM: ACOM_LABEL_PRIORITY_MM, L_PCA: PCA_LABEL_PRIORITY_MM, R_PCA: PCA_LABEL_PRIORITY_MM}.get(label, 0.0)


def generate_phantom(seed_or_rng: SeedLike = 0, config: Optional[PhantomConfig] = None) -> Phantom:
    """Generate one phantom; an int seed s is case 0 of set s, a (seed, index) pair is that case of a set."""
    if config is not None and not isinstance(config, PhantomConfig):
        raise InputError(f"config must be a PhantomConfig, got {type(config).__name__}")
    cfg = config or PhantomConfig()
    rng = _rng(seed_or_rng)
    variants = sample_variants(rng, cfg.prevalence, cfg.force)
    landmarks = sample_landmarks(rng, cfg.anatomy)
    pose = sample_pose(rng, cfg.anatomy)
    image_params = sample_image_params(rng, cfg.image)
    vessels = build_vessels(rng, landmarks, variants, float(pose["scale"]))  # type: ignore[arg-type]
    place(vessels, pose)
    flow_saturation(vessels)
    tubes = [Tube(v.points, v.radii, brightness_along(v.saturation, float(image_params["saturation_length_mm"]),
                                                         v.slow_flow), v.label,
                  label_priority_mm=_label_priority(v.label)) for v in vessels]
    affine = cfg.affine()
    grid = Grid(cfg.shape, affine)
    voxel = min(cfg.spacing_mm)
    raster = rasterise(tubes, grid, min_label_radius_mm=0.55 * voxel, label_margin_mm=LABEL_MARGIN_VOXELS * voxel)
    image = render(rng, raster.sdf, raster.brightness, raster.radius, affine, image_params,
                   pose["tip_mm"])  # type: ignore[arg-type]
    drawn = variant_vectors(raster.labels).as_dict()
    labels = merge_label_islands(raster.labels, lambda trial: variant_vectors(trial).as_dict() == drawn)
    measured = variant_vectors(labels).as_dict()
    params = {
        "circle_in_view": measured == variants.topcow(),  # False: the grid cuts part of the circle off
        "landmarks_mm": landmarks, "pose": pose, "image": image_params,
        "vessels": {v.name: {"label": v.label, "length_mm": round(v.length_mm, 2),
                             "radius_mm": [round(float(v.radii[0]), 3), round(float(v.radii[-1]), 3)]}
                    for v in vessels},
    }
    return Phantom(image, labels, affine, params, variants, measured)
