"""Small tensor operations shared by the generator and the discriminator."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

LEAKY_SLOPE = 0.2


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2), the activation of every StyleGAN2 layer."""
    return F.leaky_relu(x, LEAKY_SLOPE)


def blur_kernel(dtype: torch.dtype = torch.float32, device: torch.device = None) -> torch.Tensor:
    """The normalised separable [1, 2, 1]^3 low-pass kernel, shape (1, 1, 3, 3, 3)."""
    f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    k = f[:, None, None] * f[None, :, None] * f[None, None, :]
    return (k / k.sum()).to(dtype=dtype, device=device)[None, None]


def blur3d(x: torch.Tensor) -> torch.Tensor:
    """Blur every channel with the [1, 2, 1]^3 kernel and replicate padding (anti-aliasing after resampling)."""
    b, c = x.shape[:2]
    padded = F.pad(x.reshape(b * c, 1, *x.shape[2:]), (1, 1, 1, 1, 1, 1), mode="replicate")
    out = F.conv3d(padded, blur_kernel(x.dtype, x.device))
    return out.reshape(b, c, *out.shape[2:])


def upsample(x: torch.Tensor, factors: Tuple[int, int, int]) -> torch.Tensor:
    """Trilinear upsampling by per-axis integer factors (align_corners False), e.g. (1, 2, 2) in-plane."""
    return F.interpolate(x, scale_factor=tuple(float(f) for f in factors), mode="trilinear", align_corners=False)
