"""The GAN losses and regularisers: hinge, gradient penalty on reals, path-length penalty.

Sign convention: the discriminator scores real volumes high. (The reference scores them low; the mirrored
hinge is the same objective.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - real)) + mean(relu(1 + fake))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(fake logits)."""
    return -fake_logits.float().mean()


def gradient_penalty(reals: torch.Tensor, real_logits: torch.Tensor, kind: str, scale: float = 1.0) -> torch.Tensor:
    """Per-sample penalty on d logits / d reals: (|g| - 1)^2 ("one-centred", the reference's) or |g|^2 ("r1").

    `scale` multiplies the logits before differentiation and divides the gradients after (fp16 loss scaling).
    """
    (grads,) = torch.autograd.grad(real_logits.float().sum() * scale, reals, create_graph=True)
    norms = (grads.float() / scale).flatten(1).norm(dim=1)
    return (norms - 1.0).square() if kind == "one-centred" else norms.square()


def path_lengths(ws: torch.Tensor, images: torch.Tensor, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Per-sample |J_w^T y| for random images y scaled by voxels^(-1/3) (the reference's 3D normalisation)."""
    voxels = images[0].numel()
    noise = torch.randn(images.shape, generator=gen, device=images.device) / voxels ** (1.0 / 3.0)
    (grads,) = torch.autograd.grad((images.float() * noise).sum() * scale, ws, create_graph=True)
    return (grads.float() / scale).square().sum(dim=2).mean(dim=1).sqrt()
