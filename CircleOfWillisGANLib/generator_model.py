"""The generator as one module (mapping + synthesis), the unit that checkpoints store."""

from __future__ import annotations

import torch
from torch import nn

from .architecture import Architecture
from .networks import MappingNetwork, SynthesisNetwork
from .networks.synthesis import ModulatedConv3d, NoiseInjection


class GeneratorModel(nn.Module):
    """Mapping and synthesis networks of one architecture; parameter names are the checkpoint's keys."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.mapping = MappingNetwork(arch.latent_dim, arch.mapping_layers, arch.mapping_lr_mul)
        self.synthesis = SynthesisNetwork(arch)

    @torch.no_grad()
    def mean_w(self, num_samples: int = 10_000, seed: int = 0, batch: int = 1000) -> torch.Tensor:
        """Mean of w over `num_samples` z drawn from a fixed seed: the truncation centre, reproducible."""
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.arch.latent_dim, dtype=torch.float64)
        device = next(self.parameters()).device
        for start in range(0, num_samples, batch):
            n = min(batch, num_samples - start)
            z = torch.randn(n, self.arch.latent_dim, generator=gen).to(device)
            total += self.mapping(z).double().sum(0).cpu()
        return (total / num_samples).float()



def init_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """The reference's weights (unit-normal mapping and constant, Kaiming-normal convolutions and affines) with
    zero biases, as StyleGAN2 has them (the reference leaves PyTorch's default uniform biases), and zero noise maps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias") or isinstance(_owner(model, name), NoiseInjection):
                p.zero_()
                continue
            p.copy_(torch.randn(p.shape, generator=gen))
            if isinstance(_owner(model, name), (nn.Conv3d, nn.Linear, ModulatedConv3d)):
                p.mul_((2.0 / p[0].numel()) ** 0.5)
    return model


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    return model.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else model
