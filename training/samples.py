"""MIP contact sheets of EMA-generator samples from fixed seeds, to watch a run learn."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from CircleOfWillisGANLib.generator_model import GeneratorModel
from CircleOfWillisGANLib.latents import z_from_seeds
from CircleOfWillisGANLib.mip import contact_sheet, mip_panel, save_png
from CircleOfWillisGANLib.networks.noise import noise_from_seeds


@torch.no_grad()
def sample_volumes(model: GeneratorModel, seeds: Sequence[int], device: torch.device, batch: int = 4) -> np.ndarray:
    """(N, D, H, W) float32 volumes in [0, 1] for `seeds` (z and noise from the seed, no truncation)."""
    arch = model.arch
    z = z_from_seeds(list(seeds), arch.latent_dim)
    noise = noise_from_seeds(arch, list(seeds))
    out = []
    for start in range(0, len(seeds), batch):
        w = model.mapping(z[start: start + batch].to(device))
        ws = w[:, None, :].expand(-1, model.synthesis.num_ws, -1)
        out.append(model.synthesis(ws, noise[start: start + batch].to(device))[:, 0].float().clamp(0, 1).cpu())
    return torch.cat(out).numpy()


def write_sample_sheet(path: Path, volumes: np.ndarray, seeds: Sequence[int], spacing_mm: Sequence[float]) -> np.ndarray:
    """Write a PNG contact sheet of MIP panels (axial | coronal / sagittal) of the samples; return the sheet."""
    sheet = contact_sheet([mip_panel(v, spacing_mm, scale=1.0) for v in volumes], columns=4,
                          captions=[f"seed {s}" for s in seeds])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, sheet)
    return sheet
