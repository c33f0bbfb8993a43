"""The mapping network z -> w of StyleGAN2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import leaky_relu


class EqualLinear(nn.Module):
    """Linear layer whose weight and bias are multiplied by `lr_mul` at run time (equalised learning rate)."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.lr_mul, self.bias * self.lr_mul)


class MappingNetwork(nn.Module):
    """L2-normalise z, then `num_layers` equalised linear layers with LeakyReLU(0.2)."""

    def __init__(self, latent_dim: int, num_layers: int = 8, lr_mul: float = 0.1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.layers = nn.ModuleList(EqualLinear(latent_dim, latent_dim, lr_mul) for _ in range(num_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.normalize(z, dim=1)
        for layer in self.layers:
            x = leaky_relu(layer(x))
        return x
