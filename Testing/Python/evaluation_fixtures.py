"""Small synthetic TOF-like volumes for the evaluation tests: bright oblique tubes on a noisy dark background."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from CircleOfWillisGANLib.volume_io import default_affine, save_volume

SHAPE = (32, 48, 48)


def tube_volume(seed: int, shape=SHAPE, tubes: int = 3) -> np.ndarray:
    """Noisy background near 0.1 with `tubes` bright straight vessels of random direction and radius 1.2-2.2 voxels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    volume = 0.1 + 0.03 * rng.standard_normal(shape).astype(np.float32)
    for _ in range(tubes):
        centre = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rel = grid - centre[:, None, None, None].astype(np.float32)
        along = np.tensordot(direction.astype(np.float32), rel, 1)
        dist = np.sqrt(np.maximum((rel ** 2).sum(0) - along ** 2, 0.0))
        volume = np.maximum(volume, np.where(dist <= rng.uniform(1.2, 2.2), rng.uniform(0.6, 0.9), 0.0))
    return np.clip(volume, 0.0, 1.0).astype(np.float32)


def noise_volume(seed: int, shape=SHAPE) -> np.ndarray:
    """Uniform noise: what an untrained generator's output looks like to the metrics."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def write_set(folder: Path, volumes: List[np.ndarray], prefix: str = "case") -> Path:
    """Write volumes as NIfTI files case_000.nii.gz ... into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(volumes):
        save_volume(folder / f"{prefix}_{i:03d}.nii.gz", v, default_affine(v.shape))
    return folder
