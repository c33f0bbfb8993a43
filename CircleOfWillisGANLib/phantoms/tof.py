"""The TOF-MRA image model: bright inflow on saturated tissue, partial volume, bias, slabs and Rician noise.

All amplitudes are relative to fresh inflowing blood (1.0); the volume is min-max normalised at the end,
as the reference normalises its training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from ..errors import require
from .ranges import check_ranges, draw


SKULL_EDGE_MM = 1.5  # standard deviation of the skull-strip edge's irregularity


@dataclass(frozen=True)
class ImageConfig:
    """Population ranges (uniform) of the image parameters; defaults chosen for DOMAIN.md's intensity facts.

    They match its tissue level (median ~0.11 after min-max scaling) but not its tails: over 300 default phantoms
    about 1.2% of voxels exceed 0.3 (DOMAIN.md: ~0.6%) and tissue's 99th percentile is ~0.19 (0.24)."""

    tissue_level: Tuple[float, float] = (0.08, 0.12)
    csf_level: Tuple[float, float] = (0.04, 0.07)
    tissue_texture: Tuple[float, float] = (0.05, 0.12)
    saturation_length_mm: Tuple[float, float] = (30.0, 60.0)
    vessel_gain: Tuple[float, float] = (0.85, 1.0)
    psf_sigma_mm: Tuple[float, float] = (0.25, 0.4)
    bias_amplitude: Tuple[float, float] = (0.1, 0.3)
    noise_sigma: Tuple[float, float] = (0.012, 0.03)
    slab_probability: float = 0.35
    slab_thickness_mm: Tuple[float, float] = (14.0, 24.0)
    slab_drop: Tuple[float, float] = (0.08, 0.2)
    skull_strip_probability: float = 0.5

    def __post_init__(self) -> None:
        check_ranges(self)


def sample_image_params(rng: np.random.Generator, cfg: ImageConfig) -> Dict[str, object]:
    """The scalar image parameters of one volume, recorded in its JSON."""
    return {
        "tissue_level": draw(rng, cfg.tissue_level),
        "csf_level": draw(rng, cfg.csf_level),
        "tissue_texture": draw(rng, cfg.tissue_texture),
        "saturation_length_mm": draw(rng, cfg.saturation_length_mm),
        "vessel_gain": draw(rng, cfg.vessel_gain),
        "psf_sigma_mm": draw(rng, cfg.psf_sigma_mm),
        "bias_amplitude": draw(rng, cfg.bias_amplitude),
        "noise_sigma": draw(rng, cfg.noise_sigma),
        "slab": bool(rng.random() < cfg.slab_probability),
        "slab_thickness_mm": draw(rng, cfg.slab_thickness_mm),
        "slab_offset": float(rng.random()),
        "slab_drop": draw(rng, cfg.slab_drop),
        "skull_strip": bool(rng.random() < cfg.skull_strip_probability),
    }


def _basis(n: int, cells: int) -> np.ndarray:
    """(n, cells + 2) Gaussian interpolation weights from a coarse lattice to n fine samples, rows summing to 1."""
    centres = np.linspace(-1.0, cells, cells + 2)
    positions = np.linspace(0.0, cells - 1.0, n)
    weights = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / 0.75) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """A smooth random field of zero mean and unit standard deviation: coarse Gaussian noise interpolated."""
    coarse = rng.standard_normal(tuple(int(c) + 2 for c in cells)).astype(np.float32)
    bd, bh, bw = (_basis(int(n), int(c)) for n, c in zip(shape, cells))
    fine = np.einsum("ia,abc->ibc", bd, coarse)
    fine = np.einsum("jb,ibc->ijc", bh, fine)
    fine = np.einsum("kc,ijc->ijk", bw, fine)
    fine = fine - fine.mean()
    return (fine / max(float(fine.std()), 1e-6)).astype(np.float32)


def occupancy(sdf: np.ndarray, voxel_mm: float, radius_mm: np.ndarray) -> np.ndarray:
    """Partial-volume fraction of lumen in each voxel: a ramp of the signed distance over one voxel, scaled so that
    its integral over a tube's cross-section is the lumen's area. The bare ramp gives a tube much thinner than a voxel
    several times its cross-section (2.3x for a 0.3 mm radius at 1.24 mm), as if it were a voxel wide."""
    ramp = np.clip(0.5 - sdf / voxel_mm, 0.0, 1.0)
    return (ramp * ramp_area_correction(radius_mm, voxel_mm)).astype(np.float32)


def ramp_area_correction(radius_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Lumen area pi r^2 over the integral of the occupancy ramp across a tube of radius r (closed form)."""
    r = np.maximum(np.asarray(radius_mm, dtype=np.float64), 1e-6)
    h = 0.5 * voxel_mm
    outer, inner = r + h, np.maximum(r - h, 0.0)
    ramp_area = np.pi * inner ** 2 + (2.0 * np.pi / voxel_mm) * (
        outer ** 3 / 6.0 - outer * inner ** 2 / 2.0 + inner ** 3 / 3.0)
    return np.minimum(1.0, np.pi * r ** 2 / ramp_area)


def _world_axes(shape: Sequence[int], affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(affine, float)
    d, h, w = shape
    x = (a[0, 0] * np.arange(h) + a[0, 3]).astype(np.float32)[None, :, None]
    y = (a[1, 1] * np.arange(w) + a[1, 3]).astype(np.float32)[None, None, :]
    z = (a[2, 2] * np.arange(d) + a[2, 3]).astype(np.float32)[:, None, None]
    return x, y, z


def render(rng: np.random.Generator, sdf: np.ndarray, brightness: np.ndarray, radius: np.ndarray, affine: np.ndarray,
           params: Dict[str, object], tip_mm: Sequence[float]) -> np.ndarray:
    """The normalised TOF-like image (D, H, W) float32 in [0, 1] from the rasterised vessels (signed distance,
    inflow brightness and lumen radius of the nearest tube per voxel)."""
    ndi = require("scipy.ndimage", "phantom images", "scipy")
    shape = sdf.shape
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    voxel = float(np.mean(spacing))
    p = params
    x, y, z = _world_axes(shape, affine)
    tx, ty, tz = (float(v) for v in tip_mm)
    cells = (max(2, shape[0] // 8), max(2, shape[1] // 16), max(2, shape[2] // 16))
    tissue = float(p["tissue_level"]) * (1.0 + float(p["tissue_texture"]) * smooth_field(rng, shape, cells))
    fine = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.8)
    tissue += 0.02 * float(p["tissue_level"]) / max(float(fine.std()), 1e-6) * fine
    cistern = np.exp(-(((x - tx) / 22.0) ** 2 + ((y - ty - 8.0) / 16.0) ** 2 + ((z - tz - 2.0) / 7.0) ** 2))
    midbrain = np.exp(-(((x - tx) / 11.0) ** 2 + ((y - ty + 13.0) / 10.0) ** 2))
    cistern = np.clip(cistern * (1.0 - midbrain) * (1.0 + 0.5 * smooth_field(rng, shape, cells)), 0.0, 1.0)
    tissue = tissue * (1.0 - cistern) + float(p["csf_level"]) * cistern
    occ = occupancy(sdf, voxel, radius)
    vessels = occ * brightness * float(p["vessel_gain"])
    image = tissue * (1.0 - occ) + vessels
    sigma = [float(p["psf_sigma_mm"]) / s for s in (spacing[2], spacing[0], spacing[1])]
    image = ndi.gaussian_filter(image, sigma, truncate=2.5)
    image *= (1.0 + float(p["bias_amplitude"]) * np.clip(smooth_field(rng, shape, (2, 2, 2)), -2, 2) / 2.0)
    if p["slab"]:
        phase = ((z - tz) / float(p["slab_thickness_mm"]) + float(p["slab_offset"])) % 1.0
        image *= (1.0 - float(p["slab_drop"]) * phase)
    noise = float(p["noise_sigma"])
    real = image + np.float32(noise) * rng.standard_normal(shape, dtype=np.float32)
    imaginary = np.float32(noise) * rng.standard_normal(shape, dtype=np.float32)
    image = np.sqrt(real * real + imaginary * imaginary)
    if p["skull_strip"]:  # a brain mask's lower edge: a bowl below the circle, made irregular as real masks are
        irregular = smooth_field(rng, (2, shape[1], shape[2]), (2, max(2, shape[1] // 10), max(2, shape[2] // 10)))[:1]
        floor = tz - 9.0 + 4.0 * ((x - tx) / 25.0) ** 2 - 0.12 * (y - ty) + SKULL_EDGE_MM * irregular
        image = np.where((z < floor) & (occ < 0.05), 0.0, image)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def brightness_along(saturation: np.ndarray, saturation_length_mm: float, slow_flow: float) -> np.ndarray:
    """Inflow signal along a vessel: fresh blood is 1; it fades with accumulated saturation and slow flow."""
    return (slow_flow * np.exp(-np.asarray(saturation) / saturation_length_mm)).astype(np.float32)
