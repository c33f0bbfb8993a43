"""3D differentiable augmentation of what the discriminator sees, and ADA's adaptive augmentation probability.

Each volume is augmented with probability p; an augmented volume gets every enabled operation: a left-right
flip with probability 1/2, an integer translation of up to 1/8 of each axis (zero fill), a cutout box of half of
each axis, a brightness shift of up to +-0.1 and a contrast factor in [0.75, 1.25]. All are differentiable, so
generator gradients pass through them, and all draw from the given generator (reproducible per step).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch

TRANSLATION_RATIO = 1.0 / 8.0
CUTOUT_RATIO = 0.5
BRIGHTNESS = 0.1
CONTRAST = 0.25


def augment(x: torch.Tensor, p: float, ops: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Augment each (1, D, H, W) sample of `x` with probability `p` (the draws happen even at p = 0)."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen, device=x.device) < p
    if "flip" in ops:
        flip = chosen & (torch.rand(n, generator=gen, device=x.device) < 0.5)
        x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(3), x)
    if "translation" in ops:
        x = _translate(x, chosen, gen)
    if "cutout" in ops:
        x = _cutout(x, chosen, gen)
    if "brightness" in ops:
        shift = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * BRIGHTNESS
        x = x + (shift * chosen).to(x.dtype).view(-1, 1, 1, 1, 1)
    if "contrast" in ops:
        factor = 1 + (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * CONTRAST * chosen
        mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        x = (x - mean) * factor.to(x.dtype).view(-1, 1, 1, 1, 1) + mean
    return x


def _translate(x: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    sizes = x.shape[2:]
    limits = [max(1, int(s * TRANSLATION_RATIO + 0.5)) for s in sizes]
    shifts = torch.stack([torch.randint(-m, m + 1, (x.shape[0],), generator=gen, device=x.device) for m in limits], 1)
    shifts = (shifts * chosen[:, None]).tolist()
    pad = [m for m in reversed(limits) for _ in range(2)]
    padded = torch.nn.functional.pad(x, pad)
    out = []
    for i, (sd, sh, sw) in enumerate(shifts):
        d0, h0, w0 = limits[0] - sd, limits[1] - sh, limits[2] - sw
        out.append(padded[i, :, d0: d0 + sizes[0], h0: h0 + sizes[1], w0: w0 + sizes[2]])
    return torch.stack(out)


def _cutout(x: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    box = chosen.view(-1, 1, 1, 1, 1)
    for axis, size in enumerate(x.shape[2:]):
        length = int(size * CUTOUT_RATIO + 0.5)
        centre = torch.randint(0, size, (n,), generator=gen, device=x.device)
        offset = torch.arange(size, device=x.device)[None, :] - (centre[:, None] - length // 2)
        inside = (offset >= 0) & (offset < length)
        view = [n, 1, 1, 1, 1]
        view[2 + axis] = size
        box = box & inside.view(view)
    return x * (~box).to(x.dtype)


class AdaptiveAugment:
    """ADA's heuristic: raise p while E[sign(D(real))] exceeds `target` (D overfits), lower it otherwise."""

    def __init__(self, p: float, target: float, interval: int, kimg: float, batch: int) -> None:
        self.p = float(p)
        self.target = float(target)
        self.interval = interval
        self.step_size = batch * interval / (kimg * 1000.0) if kimg > 0 else 0.0
        self.sign_sum = 0.0
        self.sign_count = 0.0

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def observe(self, sign_sum: float, count: float) -> None:
        """Add the summed signs of real logits (already summed over processes) from one step."""
        self.sign_sum += sign_sum
        self.sign_count += count

    def update(self, step: int) -> None:
        """Every `interval` steps move p by one step towards the target; clamp to [0, 1]."""
        if not self.adaptive or (step + 1) % self.interval or self.sign_count == 0:
            return
        rt = self.sign_sum / self.sign_count
        direction = 1.0 if rt > self.target else -1.0
        self.p = min(1.0, max(0.0, self.p + direction * self.step_size))
        self.sign_sum = self.sign_count = 0.0

    def state_dict(self) -> Dict[str, float]:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.p, self.sign_sum, self.sign_count = float(state["p"]), float(state["sign_sum"]), float(state["sign_count"])
