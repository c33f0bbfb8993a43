"""The synthesis network: a learned constant grown by modulated 3D convolutions into a TOF-MRA volume."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..architecture import Architecture
from .noise import block_noise
from .ops import blur3d, leaky_relu, upsample

DEMOD_EPS = 1e-8


class ModulatedConv3d(nn.Module):
    """3D convolution whose input channels are scaled by (style + 1) per sample, optionally demodulated.

    Batch 1 folds the style into the weights (one plain convolution); larger batches scale the input and
    the output instead of building per-sample weights, which is equal in exact arithmetic and needs no
    grouped convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int, kernel_size: int = 3,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *(kernel_size,) * 3))
        self.affine = nn.Linear(latent_dim, in_channels)
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale = self.affine(w.float()) + 1.0
        weight = self.weight.float()
        demod = None
        if self.demodulate:
            energy = weight.square().sum(dim=(2, 3, 4))
            demod = torch.rsqrt(scale.square() @ energy.t() + DEMOD_EPS)
        if x.shape[0] == 1:
            folded = weight * scale[0].view(1, -1, 1, 1, 1)
            if demod is not None:
                folded = folded * demod[0].view(-1, 1, 1, 1, 1)
            return F.conv3d(x, folded.to(x.dtype), padding=self.padding)
        out = F.conv3d(x * scale.to(x.dtype)[:, :, None, None, None], weight.to(x.dtype), padding=self.padding)
        if demod is not None:
            out = out * demod.to(x.dtype)[:, :, None, None, None]
        return out


class NoiseInjection(nn.Module):
    """Adds a per-channel affine map (weight * noise + bias) of a one-channel noise volume."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return x + (noise.to(x.dtype) * self.weight.to(x.dtype).view(1, c, 1, 1, 1)
                    + self.bias.to(x.dtype).view(1, c, 1, 1, 1))


class SynthesisBlock(nn.Module):
    """Upsample, two modulated convolutions with noise, and a skip connection to the output image."""

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int, upsample_factors: Tuple[int, int, int],
                 image_upsample_factors: Optional[Tuple[int, int, int]]) -> None:
        super().__init__()
        self.upsample_factors = tuple(upsample_factors)
        self.image_upsample_factors = tuple(image_upsample_factors) if image_upsample_factors else None
        self.conv1 = ModulatedConv3d(in_channels, out_channels, latent_dim)
        self.noise1 = NoiseInjection(out_channels)
        self.conv2 = ModulatedConv3d(out_channels, out_channels, latent_dim)
        self.noise2 = NoiseInjection(out_channels)
        self.to_image = ModulatedConv3d(out_channels, 1, latent_dim, kernel_size=1, demodulate=False)

    def forward(self, x: torch.Tensor, image: Optional[torch.Tensor], w: torch.Tensor,
                noise: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.upsample_factors != (1, 1, 1):
            x = upsample(x, self.upsample_factors)
        x = leaky_relu(self.noise1(self.conv1(x, w), noise))
        x = leaky_relu(self.noise2(self.conv2(x, w), noise))
        y = self.to_image(x, w).float()
        if image is not None:
            y = y + image
        if self.image_upsample_factors is not None:
            y = blur3d(upsample(y, self.image_upsample_factors))
        return x, y


class SynthesisNetwork(nn.Module):
    """Maps one w per block and a noise input to an unbounded (N, 1, D, H, W) float32 volume."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        channels = arch.generator_channels()
        self.const = nn.Parameter(torch.randn(1, channels[0], 4, 4, 4))
        self.input_conv = nn.Conv3d(channels[0], channels[0], 3, padding=1)
        blocks: List[SynthesisBlock] = []
        for i, (cin, cout) in enumerate(zip([channels[0]] + channels[:-1], channels)):
            last = i == arch.num_blocks - 1
            blocks.append(SynthesisBlock(cin, cout, arch.latent_dim, arch.upsample_factors(i),
                                         None if last else arch.upsample_factors(i + 1)))
        self.blocks = nn.ModuleList(blocks)

    @property
    def num_ws(self) -> int:
        """How many w vectors one forward pass takes (one per block)."""
        return len(self.blocks)

    def forward(self, ws: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype = torch.float32,
                channels_last: bool = False) -> torch.Tensor:
        """ws: (N, num_ws, latent_dim); noise in the architecture's convention; compute in `dtype`."""
        n = ws.shape[0]
        x = self.const.to(dtype).expand(n, -1, -1, -1, -1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = F.conv3d(x, self.input_conv.weight.to(dtype), self.input_conv.bias.to(dtype), padding=1)
        image = None
        for i, block in enumerate(self.blocks):
            shape = self.arch.block_shape(i)
            x, image = block(x, image, ws[:, i], block_noise(self.arch, noise, shape))
        return image
