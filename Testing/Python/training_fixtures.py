"""Small synthetic TOF-MRA-like data for the training tests: bright tubes in Rician-like noise."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from CircleOfWillisGANLib.volume_io import default_affine, save_volume


def tube_volume(shape: Sequence[int], seed: int) -> np.ndarray:
    """A (D, H, W) volume with two bright tubes (a bent 'circle' and a vertical 'basilar') on dim noisy tissue."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    cy, cx = h / 2 + rng.normal(0, 1), w / 2 + rng.normal(0, 1)
    radius = min(h, w) * (0.28 + 0.04 * rng.random())
    ring = np.abs(np.hypot(yy - cy, xx - cx) - radius) < 1.2
    ring &= np.abs(zz - d / 2) < 1.5
    basilar = (np.hypot(yy - cy - radius, xx - cx) < 1.5) & (zz < d / 2)
    tissue = 0.1 + 0.02 * np.abs(rng.normal(size=shape) + 1j * rng.normal(size=shape))
    return np.where(ring | basilar, 0.8 + 0.1 * rng.random(shape), tissue).astype(np.float32)


def write_tube_volumes(folder: Path, count: int, shape: Sequence[int] = (16, 32, 32), spacing: float = 0.62) -> Path:
    """Write `count` tube volumes as NIfTI into `folder` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        save_volume(folder / f"case{i:03d}.nii.gz", tube_volume(shape, i) * 500.0,
                    default_affine(shape, (spacing,) * 3))
    return folder


def write_tube_dataset(folder: Path, count: int = 6, shape: Sequence[int] = (16, 32, 32)) -> Path:
    """A prepared dataset (shards + manifest) of min-max-normalised tube volumes, without running `prepare`."""
    from training.shards import ShardWriter, write_manifest

    writer = ShardWriter(folder, shape, shard_size=4)
    for i in range(count):
        v = tube_volume(shape, i)
        writer.add((v - v.min()) / (v.max() - v.min()))
    writer.flush()
    affine = default_affine(shape, (0.62, 0.62, 0.62))
    write_manifest(folder, {
        "shape_dhw": list(shape), "count": count, "dtype": "float16", "value_range": [0.0, 1.0],
        "shards": writer.shards,
        "data": {"affine": affine.tolist(), "spacing_mm": [0.62] * 3, "orientation": "RAS",
                 "normalisation": {"method": "minmax"}},
        "volumes": [{"source": f"tube{i}", "sha256": str(i)} for i in range(count)], "skipped": [], "ignored": [],
    })
    return folder
