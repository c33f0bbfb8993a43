"""Small synthetic source folders for the Turing tests: real and generated volumes that differ in every way a
careless session would leak (grid, spacing, orientation, dtype, intensity range, file names, descriptions); and a
full disk."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pytest

GENERATED_SHAPE = (8, 16, 16)
REAL_SHAPE = (8, 32, 32)


def vessel_volume(rng: np.random.Generator, shape: Tuple[int, int, int]) -> np.ndarray:
    """A dim noisy background with a few bright tubes: enough structure for MIPs and surfaces."""
    d, h, w = shape
    v = 0.1 + 0.03 * rng.standard_normal(shape)
    for _ in range(3):
        y, x = rng.integers(2, h - 2), rng.integers(2, w - 2)
        v[:, max(0, y - 1): y + 1, :] += 0.7
        v[:, :, max(0, x - 1): x + 1] += 0.5
    return np.clip(v, 0, None).astype(np.float32)


def make_sources(root: Path, n_real: int = 10, n_generated: int = 10, seed: int = 0) -> Tuple[Path, Path]:
    """Write real volumes (int16, LPS, 0.31 mm in-plane, 'REAL_subject' names and descriptions) and generated
    ones (float32 in [0, 1], RAS, 0.62 mm, 'FAKE_seed' names) plus label maps that must be skipped."""
    import nibabel as nib

    from CircleOfWillisGANLib.volume_io import default_affine, save_volume

    rng = np.random.default_rng(seed)
    real, generated = root / "real_src", root / "generated_src"
    real.mkdir(parents=True)
    generated.mkdir(parents=True)
    for i in range(n_real):
        v = (vessel_volume(rng, REAL_SHAPE) * 900 + 40).astype(np.int16)
        affine = default_affine(REAL_SHAPE, (0.31, 0.31, 0.62))
        affine[:2] *= -1
        image = nib.Nifti1Image(v.transpose(1, 2, 0), affine)
        image.header["descrip"] = b"REAL_scanner TOF"
        nib.save(image, str(real / f"REAL_subject{i:02d}.nii.gz"))
        nib.save(nib.Nifti1Image((v > 500).astype(np.uint8).transpose(1, 2, 0), affine),
                 str(real / f"REAL_subject{i:02d}_label.nii.gz"))
    for i in range(n_generated):
        save_volume(generated / f"FAKE_seed{i:04d}.nii.gz", np.clip(vessel_volume(rng, GENERATED_SHAPE), 0, 1),
                    default_affine(GENERATED_SHAPE))
    return real, generated


@contextlib.contextmanager
def disk_full_after(path: Path, room: int) -> Iterator[None]:
    """Let files grow only `room` bytes past `path`'s size, as a full disk would (writes beyond fail with EFBIG)."""
    resource = pytest.importorskip("resource")
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
