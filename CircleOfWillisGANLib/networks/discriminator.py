"""The residual 3D discriminator that scores volumes as real (high) or generated (low)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from ..architecture import Architecture
from .ops import blur3d, leaky_relu


class DiscriminatorBlock(nn.Module):
    """Two 3x3x3 convolutions, then blur and a strided convolution; a strided 1x1x1 residual path."""

    def __init__(self, in_channels: int, out_channels: int, strides: Tuple[int, int, int]) -> None:
        super().__init__()
        self.downsamples = strides != (1, 1, 1)
        self.residual = nn.Conv3d(in_channels, out_channels, 1, stride=strides)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.down = nn.Conv3d(out_channels, out_channels, 3, padding=1, stride=strides) if self.downsamples else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        x = leaky_relu(self.conv2(leaky_relu(self.conv1(x))))
        if self.down is not None:
            x = self.down(blur3d(x))
        return (x + res) * (1.0 / math.sqrt(2.0))


class Discriminator(nn.Module):
    """Residual blocks down to 2x2x2, a final 3x3x3 convolution and a linear layer to one logit per volume."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        channels = arch.discriminator_channels()
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cin, cout, arch.downsample_strides(i))
            for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:]))
        )
        self.final_conv = nn.Conv3d(channels[-1], channels[-1], 3, padding=1)
        self.to_logit = nn.Linear(8 * channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, D, H, W) -> logits (N,)."""
        for block in self.blocks:
            x = block(x)
        x = self.final_conv(x)
        return self.to_logit(x.flatten(1)).squeeze(1)
