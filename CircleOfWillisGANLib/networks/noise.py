"""The two per-voxel noise conventions a synthesis network can be trained with.

reference: one uniform [0, 1) volume of shape (N, S, S, S, 1), S = max(output_shape), per sample; each block
    takes its corner `[:, :d, :h, :w]`. This is what the published checkpoints expect.
native: one standard-normal volume of shape (N, 1, D, H, W) per sample; each block takes every k-th voxel,
    so coarse blocks see noise spread over the whole field and the volume is S^3 / (D H W) times smaller.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..architecture import Architecture
from ..errors import InputError


def noise_shape(arch: Architecture, batch: int) -> Tuple[int, ...]:
    """Shape of the noise input a model of this architecture takes for `batch` samples."""
    if arch.noise_mode == "reference":
        s = arch.noise_side
        return (batch, s, s, s, 1)
    return (batch, 1, *arch.output_shape)


def noise_from_seeds(arch: Architecture, seeds: Sequence[int]) -> torch.Tensor:
    """Noise input for each seed, identical on every platform (NumPy's PCG64 stream, float32)."""
    shape = noise_shape(arch, 1)[1:]
    volumes = []
    for seed in seeds:
        rng = np.random.Generator(np.random.PCG64(int(seed)))
        if arch.noise_mode == "reference":
            volumes.append(rng.random(shape, dtype=np.float32))
        else:
            volumes.append(rng.standard_normal(shape, dtype=np.float32))
    return torch.from_numpy(np.stack(volumes))


def check_noise(arch: Architecture, noise: torch.Tensor, batch: Optional[int] = None) -> torch.Tensor:
    """Validate an explicit noise input against the model's convention; return it as a float tensor."""
    try:
        noise = torch.as_tensor(noise)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"noise must be an array of numbers, got {type(noise).__name__}: pass one noise volume per "
                         "sample in the model's convention, or a noise seed instead") from None
    if noise.is_complex() or noise.dtype == torch.bool:
        raise InputError(f"noise holds {noise.dtype} values: pass real-valued noise volumes or a noise seed")
    expected = noise_shape(arch, noise.shape[0] if noise.ndim else 0)
    if tuple(noise.shape) != expected or (batch is not None and noise.shape[0] != batch):
        want = noise_shape(arch, batch if batch is not None else 1)
        raise InputError(
            f"noise has shape {tuple(noise.shape)} but this model ({arch.noise_mode} noise) takes {want}: "
            "pass one noise volume per sample in the model's convention, or a noise seed instead"
        )
    if not torch.isfinite(noise).all():
        raise InputError("noise contains NaN or infinite values: pass finite noise or a noise seed")
    return noise.float()


def block_noise(arch: Architecture, noise: torch.Tensor, shape: Tuple[int, int, int]) -> torch.Tensor:
    """The (N, 1, d, h, w) noise map that a block of spatial `shape` adds to its features."""
    d, h, w = shape
    if arch.noise_mode == "reference":
        return noise[:, :d, :h, :w, 0].unsqueeze(1)
    D, H, W = arch.output_shape
    return noise[:, :, :: D // d, :: H // h, :: W // w]
