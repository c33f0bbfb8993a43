"""The synthesis network: a learned constant grown by modulated 3D convolutions into a TOF-MRA volume."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..architecture import Architecture
from .noise import block_noise
from .ops import FrozenCache, blur3d, conv3d, leaky_relu, memory_layout, upsample

DEMOD_EPS = 1e-8


class ModulatedConv3d(nn.Module):
    """3D convolution whose input channels are scaled by (style + 1) per sample, optionally demodulated.

    With one sample, a volume larger than the weights and no gradient to compute, the style is folded into the
    weights (one plain convolution); otherwise the input and output are scaled instead of building per-sample
    weights, which is equal in exact arithmetic, needs no grouped convolution and, when w needs a gradient
    (projection), no weight gradient (slow for batch-1 convolutions on the CPU). `bias` is added after
    demodulation.
    """

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int, kernel_size: int = 3,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *(kernel_size,) * 3))
        self.affine = nn.Linear(latent_dim, in_channels)
        self.demodulate = demodulate
        self.padding = kernel_size // 2
        self._frozen = FrozenCache()

    def forward(self, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        scale = self.affine(w.float()) + 1.0
        demod = None
        if self.demodulate:
            energy = self._frozen.get(self.weight, "energy", lambda p: p.float().square().sum(dim=(2, 3, 4)))
            demod = torch.rsqrt(scale.square() @ energy.t() + DEMOD_EPS)
        layout = memory_layout(x)
        needs_grad = torch.is_grad_enabled() and (self.weight.requires_grad or scale.requires_grad)
        if x.shape[0] == 1 and self.weight.numel() < x.numel() and not needs_grad:
            coef = scale[0].view(1, -1, 1, 1, 1)
            if demod is not None:
                coef = coef * demod[0].view(-1, 1, 1, 1, 1)
            folded = torch.empty(self.weight.shape, dtype=x.dtype, device=x.device, memory_format=layout)
            torch.mul(self.weight, coef, out=folded)
            return conv3d(x, folded, None if bias is None else bias.to(x.dtype), padding=self.padding)
        weight = self._frozen.get(self.weight, ("cast", x.dtype, layout), lambda p: p.to(x.dtype).contiguous(memory_format=layout))
        out = conv3d(x * scale.to(x.dtype)[:, :, None, None, None], weight, padding=self.padding)
        if demod is not None:
            out = out * demod.to(x.dtype)[:, :, None, None, None]
        return out if bias is None else out + bias.to(x.dtype).view(1, -1, 1, 1, 1)


class NoiseInjection(nn.Module):
    """Per-channel affine map (weight * noise + bias) of a one-channel noise volume; the bias is applied by
    the preceding convolution, so this adds only the noise term."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        strength, noise = self.weight.to(x.dtype), noise.to(x.dtype)
        if torch.is_grad_enabled():
            return torch.addcmul(x, noise, strength.view(1, -1, 1, 1, 1))
        # In place as a rank-1 matrix update (noise column x strength row): on the CPU this is 5x (float32) to
        # 30x (bfloat16 channels-last) faster than the broadcast multiply-add, which it equals.
        n, c = x.shape[:2]
        if c > 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
            x.permute(0, 2, 3, 4, 1).view(-1, c).addmm_(noise.reshape(-1, 1), strength.view(1, c))
        elif x.is_contiguous():
            x.view(n, c, -1).baddbmm_(strength.view(1, c, 1).expand(n, c, 1), noise.reshape(n, 1, -1))
        else:
            x.addcmul_(noise, strength.view(1, -1, 1, 1, 1))
        return x


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
        x = leaky_relu(self.noise1(self.conv1(x, w, self.noise1.bias), noise))
        x = leaky_relu(self.noise2(self.conv2(x, w, self.noise2.bias), noise))
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
        self._frozen = FrozenCache()

    @property
    def num_ws(self) -> int:
        """How many w vectors one forward pass takes (one per block)."""
        return len(self.blocks)

    def forward(self, ws: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype = torch.float32,
                channels_last: bool = False) -> torch.Tensor:
        """ws: (N, num_ws, latent_dim); noise in the architecture's convention; compute in `dtype`."""
        n = ws.shape[0]
        layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        x = self.const.to(dtype).expand(n, -1, -1, -1, -1).contiguous(memory_format=layout)
        weight = self._frozen.get(self.input_conv.weight, ("cast", dtype, layout), lambda p: p.to(dtype).contiguous(memory_format=layout))
        x = conv3d(x, weight, self.input_conv.bias.to(dtype), padding=1)
        image = None
        for i, block in enumerate(self.blocks):
            shape = self.arch.block_shape(i)
            x, image = block(x, image, ws[:, i], block_noise(self.arch, noise, shape))
        return image
