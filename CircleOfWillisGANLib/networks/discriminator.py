"""The residual 3D discriminator that scores volumes as real (high) or generated (low)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from ..architecture import Architecture
from ..errors import InputError
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


def std_group_size(batch: int, group: int) -> int:
    """The largest group of at most `group` volumes that divides `batch` evenly."""
    return max(g for g in range(1, min(batch, group) + 1) if batch % g == 0)


class MinibatchStd(nn.Module):
    """Appends one channel: the features' standard deviation across a group of volumes, averaged.

    With it D sees how varied a batch is, not only each volume, so a generator that drops rare anatomy
    (a fetal PCA, an absent A1) or collapses to a few volumes is penalised (StyleGAN's remedy for mode loss).
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = std_group_size(n, self.group)
        grouped = x.float().reshape(g, n // g, *x.shape[1:])
        spread = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3, 4))
        channel = spread.repeat(g).to(x.dtype).view(n, 1, 1, 1, 1).expand(n, 1, *x.shape[2:])
        return torch.cat([x, channel], dim=1)


class Discriminator(nn.Module):
    """Residual blocks down to 2x2x2, a final 3x3x3 convolution and a linear layer to one logit per volume.

    `minibatch_std` > 0 inserts a MinibatchStd layer of that group size before the final convolution; 0
    (the default) is the reference's discriminator, whose checkpoints load exactly.
    """

    def __init__(self, arch: Architecture, minibatch_std: int = 0) -> None:
        super().__init__()
        if minibatch_std < 0:
            raise InputError(f"minibatch_std must be 0 (off) or a group size of at least 1, got {minibatch_std}")
        self.arch = arch
        channels = arch.discriminator_channels()
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cin, cout, arch.downsample_strides(i))
            for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:]))
        )
        self.minibatch_std = MinibatchStd(minibatch_std) if minibatch_std else None
        self.final_conv = nn.Conv3d(channels[-1] + (1 if minibatch_std else 0), channels[-1], 3, padding=1)
        self.to_logit = nn.Linear(8 * channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, D, H, W) -> logits (N,)."""
        for block in self.blocks:
            x = block(x)
        if self.minibatch_std is not None:
            x = self.minibatch_std(x)
        x = self.final_conv(x)
        return self.to_logit(x.flatten(1)).squeeze(1)
