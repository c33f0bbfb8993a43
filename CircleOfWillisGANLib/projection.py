"""GAN inversion: find the w+ and noise with which a model reproduces a given volume on its grid.

Three phases, each continuing from the last: one w shared by every block (stays on the model's manifold),
then one w per block (w+, more detail), then the noise as well (the last voxel-level detail). The loss is
a vessel-weighted squared intensity error, a structural term (the L1 error of intensity gradients at two
scales, which rewards vessel edges and continuity rather than mean brightness) and a coarse term (one minus
the correlation of both volumes blurred by COARSE_BLUR_MM), which still has a gradient while the model's
vessels lie beside the scan's rather than on them, and so pulls the anatomy's layout into place.
Regularisers keep w near the model's distribution of w (a diagonal Gaussian fitted to mapped samples), the
w+ near their common mean, and the noise near its starting values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .checks import finite_number, whole_number
from .latents import check_seed
from .precision import exact_float32, resolve_precision
from .surface import vessel_threshold
from .volume_io import spacing_of

PHASES = ("w", "w+", "noise")
COARSE_BLUR_MM = 1.75  # Gaussian sigma of the coarse term: about one main-artery diameter
CLAMP_LEAK = 0.01  # slope outside [0, 1], so that voxels clamped to 0 or 1 still pull the latent
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
    """How a volume is projected; the defaults are the recommended settings."""

    w_steps: int = 200               # phase 1: one w for every block
    wplus_steps: int = 200           # phase 2: one w per block
    noise_steps: int = 100           # phase 3: w+ and the noise
    lr: float = 0.05                 # Adam step for w, in standard deviations of w per step (cosine decay per phase)
    noise_lr: float = 0.02           # Adam step for the noise
    candidates: int = 32             # random w tried before phase 1; the best one starts the optimisation
    vessel_weight: float = 4.0       # extra weight of voxels brighter than the target's vessel threshold
    structure_weight: float = 1.0    # weight of the gradient (edge) term against the intensity term
    coarse_weight: float = 0.3       # weight of the coarse-layout term (1 - correlation of the blurred volumes)
    w_prior_weight: float = 1e-3     # pull of w (the mean over blocks) towards the model's distribution of w
    wplus_spread_weight: float = 1e-2  # pull of the per-block w+ towards their mean
    noise_prior_weight: float = 1e-2   # pull of the noise towards its starting values
    prior_samples: int = 2000        # mapped samples that estimate the distribution of w
    seed: int = 0                    # candidates, prior samples and starting noise
    precision: str = "auto"          # optimisation passes: auto = bf16 where it is fast, else fp32 (result: fp32)

    def __post_init__(self) -> None:
        for name in ("w_steps", "wplus_steps", "noise_steps", "candidates", "prior_samples"):
            whole_number(getattr(self, name), f"projection {name}")
        if self.w_steps + self.wplus_steps + self.noise_steps < 1:
            raise InputError("projection needs at least one optimisation step: raise w_steps")
        if self.prior_samples < 2:
            raise InputError(f"projection prior_samples {self.prior_samples} cannot estimate a spread of w: use at least "
                             "2 (default 2000)")
        if self.candidates > self.prior_samples:
            raise InputError(f"projection candidates {self.candidates} are drawn from the {self.prior_samples} prior "
                             "samples: raise prior_samples or lower candidates")
        for name in ("lr", "noise_lr", "vessel_weight", "structure_weight", "coarse_weight", "w_prior_weight",
                     "wplus_spread_weight", "noise_prior_weight"):
            finite_number(getattr(self, name), f"projection {name}", 0)
        if self.lr <= 0 or self.noise_lr <= 0:
            raise InputError("projection learning rates must be positive")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"projection precision {self.precision!r} is unknown: use auto, fp32 or bf16")
        check_seed(self.seed)

    @property
    def total_steps(self) -> int:
        return self.w_steps + self.wplus_steps + self.noise_steps


@dataclasses.dataclass
class ProjectionResult:
    """The latent that reproduces a target, the reproduction, the loss history and quality metrics."""

    ws: torch.Tensor                    # (num_ws, latent) float32
    noise: torch.Tensor                 # (1, ...) in the model's noise convention
    reconstruction: np.ndarray          # (D, H, W) float32 in [0, 1]
    target: np.ndarray                  # (D, H, W) float32 in [0, 1]
    history: List[Dict[str, Any]]       # one record per step (before its update): step, phase, loss, intensity, structure
    metrics: Dict[str, float]
    final_loss: float                   # the loss of the returned w+ and noise, in fp32
    precision: str = "fp32"             # what the optimisation passes ran in (config.precision "auto" resolved)


def _gradients(x: torch.Tensor) -> List[torch.Tensor]:
    return [x.diff(dim=d) for d in (2, 3, 4)]


def leaky_clamp(x: torch.Tensor) -> torch.Tensor:
    """The clamp to [0, 1] that shown volumes get, with a small slope outside so that gradients never vanish."""
    clamped = x.clamp(0.0, 1.0)
    return clamped + CLAMP_LEAK * (x - clamped)


def gaussian_blur(x: torch.Tensor, sigma_voxels: Tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, D, H, W) volumes, sigma per axis (D, H, W) in voxels, edges replicated."""
    for axis, sigma in enumerate(sigma_voxels):
        radius = max(1, int(math.ceil(3.0 * sigma)))
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (taps / sigma).square())
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), (kernel / kernel.sum()).view(shape))
    return x


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.square().sum().sqrt() * b.square().sum().sqrt()).clamp_min(1e-12)


def coarse_sigma_voxels(affine: np.ndarray) -> Tuple[float, float, float]:
    """COARSE_BLUR_MM in voxels along (D, H, W) of a model whose NIfTI axes (i, j, k) are (H, W, D)."""
    i, j, k = spacing_of(affine)
    return COARSE_BLUR_MM / k, COARSE_BLUR_MM / i, COARSE_BLUR_MM / j


def vessel_loss(x: torch.Tensor, target: torch.Tensor, vessel_mask: torch.Tensor, vessel_weight: float,
                structure_weight: float, coarse_weight: float = 0.0,
                coarse_sigma: Tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Dict[str, torch.Tensor]:
    """Vessel-weighted squared error, the two-scale gradient L1 error and, with `coarse_weight`, one minus the
    correlation of the blurred volumes, of (N, 1, D, H, W) volumes."""
    weight = 1.0 + vessel_weight * vessel_mask
    intensity = (weight * (x - target).square()).sum() / weight.sum()
    structure = x.new_zeros(())
    a, b = x, target
    for _ in range(2):
        structure = structure + sum((ga - gb).abs().mean() for ga, gb in zip(_gradients(a), _gradients(b)))
        if min(a.shape[2:]) < 4:
            break
        a, b = F.avg_pool3d(a, 2), F.avg_pool3d(b, 2)
    out = {"intensity": intensity, "structure": structure, "loss": intensity + structure_weight * structure}
    if coarse_weight:
        out["coarse"] = 1.0 - _correlation(gaussian_blur(x, coarse_sigma), gaussian_blur(target, coarse_sigma))
        out["loss"] = out["loss"] + coarse_weight * out["coarse"]
    return out


def beyond_samples_note(metrics: Dict[str, float]) -> Optional[str]:
    """A note when a projection's w+ lies farther from the model's centre than any of its samples (the named
    boundaries were fitted on samples, so there the sliders act less reliably), else None."""
    farthest, samples = metrics.get("w_distance_max"), metrics.get("w_distance_max_of_samples")
    if farthest is None or samples is None or farthest <= samples:
        return None
    return (f"its w+ lies beyond every sample of the model (block distance {farthest:.2f} against at most "
            f"{samples:.2f}), where the sliders act less reliably")


def reconstruction_metrics(target: np.ndarray, reconstruction: np.ndarray) -> Dict[str, float]:
    """Pearson correlation, mean absolute error and vessel Dice (both thresholded at the target's vessel level)."""
    t = np.asarray(target, np.float64).ravel()
    r = np.asarray(reconstruction, np.float64).ravel()
    correlation = float(np.corrcoef(t, r)[0, 1]) if t.std() > 0 and r.std() > 0 else 0.0
    level = vessel_threshold(np.asarray(target, np.float32))
    tv, rv = t >= level, r >= level
    denominator = int(tv.sum() + rv.sum())
    dice = 2.0 * float((tv & rv).sum()) / denominator if denominator else 1.0
    return {"correlation": correlation, "mae": float(np.abs(t - r).mean()), "vessel_dice": dice,
            "vessel_threshold": float(level)}


class _Prior:
    """A diagonal Gaussian over w, from mapped samples: centre, spread and a normalised squared distance."""

    def __init__(self, generator: Any, samples: int, seed: int) -> None:
        z = torch.from_numpy(np.random.Generator(np.random.PCG64(seed)).standard_normal(
            (samples, generator.arch.latent_dim)).astype(np.float32))
        w = torch.cat([generator.mapping(chunk, exact=False) for chunk in z.split(1000)])
        self.mean = w.mean(0)
        self.std = w.std(0).clamp_min(1e-6)
        self.samples = w

    def distance(self, w: torch.Tensor) -> torch.Tensor:
        """Mean squared standardised distance of w (..., latent) from the centre: about 1 for the model's samples."""
        return ((w - self.mean.to(w.device)) / self.std.to(w.device)).square().mean()

    def block_distances(self, ws: torch.Tensor) -> torch.Tensor:
        """Root-mean-square standardised distance of each w in `ws` (N, latent), to compare w+ blocks with samples."""
        return ((ws - self.mean.to(ws.device)) / self.std.to(ws.device)).square().mean(-1).sqrt()


def optimisation_precision(precision: str, device: torch.device) -> Tuple[torch.dtype, bool]:
    """dtype and channels-last flag of the optimisation passes: bf16 when asked for or fast here, else fp32
    (fp16 gradients of small losses would underflow)."""
    if precision == "fp32":
        return torch.float32, False
    dtype, channels_last = resolve_precision(precision, device)
    return (torch.bfloat16, channels_last) if dtype == torch.bfloat16 else (torch.float32, False)


def _cosine(step: int, steps: int, lr: float) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))


def project(generator: Any, target: np.ndarray, config: ProjectionConfig = ProjectionConfig(),
            progress: Optional[Progress] = None) -> ProjectionResult:
    """Optimise w, then w+, then the noise so that `generator` reproduces `target` (D, H, W) in [0, 1]."""
    try:
        target_np = np.asarray(target, np.float32)
    except (TypeError, ValueError):
        raise InputError(f"the target must be a (D, H, W) array, got {type(target).__name__}: read files with "
                         "load_volume or scan_on_model_grid") from None
    if tuple(target_np.shape) != tuple(generator.arch.output_shape):
        raise InputError(f"the volume has shape {target_np.shape} but the model makes {tuple(generator.arch.output_shape)}: "
                         "bring it to the model's grid first (`cowgan project` and the panel do this)")
    if not np.isfinite(target_np).all():
        raise InputError("the volume contains NaN or infinite values: pass a finite volume")
    if target_np.min() < -0.01 or target_np.max() > 1.01:
        raise InputError(f"the volume's values span {target_np.min():.4g} to {target_np.max():.4g} but the model makes "
                         "[0, 1]: min-max normalise it first (`cowgan project` and scan_on_model_grid do)")
    device = generator.device
    prior = _Prior(generator, config.prior_samples, config.seed)
    mean, std = prior.mean.to(device), prior.std.to(device)
    t = torch.from_numpy(target_np).to(device)[None, None]
    mask = (t >= vessel_threshold(target_np)).float()
    noise0 = generator.noise([config.seed]).to(device)
    history: List[Dict[str, Any]] = []

    dtype, channels_last = optimisation_precision(config.precision, device)
    sigma = coarse_sigma_voxels(generator.affine)

    def image_loss(x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return vessel_loss(x, t, mask, config.vessel_weight, config.structure_weight, config.coarse_weight, sigma)

    def synth(ws: torch.Tensor, noise: torch.Tensor, exact: bool = False) -> torch.Tensor:
        if exact:
            with exact_float32(device, torch.float32):
                return leaky_clamp(generator.model.synthesis(ws, noise, torch.float32, False))
        with exact_float32(device, dtype):  # an fp32 forward pass is IEEE float32 on a GPU too, not TF32
            return leaky_clamp(generator.model.synthesis(ws, noise, dtype, channels_last).float())

    def losses(ws: torch.Tensor, noise: torch.Tensor, exact: bool = False) -> Dict[str, torch.Tensor]:
        out = image_loss(synth(ws, noise, exact))
        spread = ((ws - ws.mean(1, keepdim=True)) / std).square().mean()
        out["loss"] = (out["loss"] + config.w_prior_weight * prior.distance(ws.mean(1))
                       + config.wplus_spread_weight * spread
                       + config.noise_prior_weight * (noise - noise0).square().mean())
        return out

    u = _best_candidate(synth, image_loss, generator, prior, config, noise0, progress)
    noise = noise0.clone()
    num_ws = generator.num_ws
    step = 0
    for phase, steps in zip(PHASES, (config.w_steps, config.wplus_steps, config.noise_steps)):
        if steps == 0:
            continue
        if phase != "w" and u.shape[1] == 1:
            u = u.expand(-1, num_ws, -1).clone()
        u = u.detach().requires_grad_(True)
        noise = noise.detach().requires_grad_(phase == "noise")
        groups = [{"params": [u], "lr": config.lr}]
        if phase == "noise":
            groups.append({"params": [noise], "lr": config.noise_lr})
        optimiser = torch.optim.Adam(groups)
        base_lrs = [group["lr"] for group in optimiser.param_groups]
        for i in range(steps):
            for group, lr in zip(optimiser.param_groups, base_lrs):
                group["lr"] = _cosine(i, steps, lr)
            parts = losses((mean + u * std).expand(-1, num_ws, -1), noise)
            optimiser.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimiser.step()
            step += 1
            history.append({"step": step, "phase": phase, **{k: float(v.detach()) for k, v in parts.items()}})
            if progress:
                progress(step, config.total_steps)
    final_noise = noise.detach()
    ws = (mean + u.detach() * std).expand(-1, num_ws, -1)
    with torch.no_grad():
        reconstruction = synth(ws, final_noise, exact=True).clamp(0.0, 1.0)[0, 0].float().cpu().numpy()
        without_fitted_noise = synth(ws, noise0, exact=True).clamp(0.0, 1.0)[0, 0].float().cpu().numpy()
        final_loss = float(losses(ws, final_noise, exact=True)["loss"])
    metrics = reconstruction_metrics(target_np, reconstruction)
    metrics["vessel_dice_with_start_noise"] = reconstruction_metrics(target_np, without_fitted_noise)["vessel_dice"]
    metrics["w_distance_max"] = float(prior.block_distances(ws[0].cpu()).max())
    metrics["w_distance_max_of_samples"] = float(prior.block_distances(prior.samples).max())
    return ProjectionResult(ws[0].float().cpu().clone(), final_noise.float().cpu(), reconstruction, target_np, history,
                            metrics, final_loss, "bf16" if dtype == torch.bfloat16 else "fp32")


@torch.no_grad()
def _best_candidate(synth: Callable[..., torch.Tensor], image_loss: Callable[[torch.Tensor], Dict[str, torch.Tensor]],
                    generator: Any, prior: _Prior, config: ProjectionConfig, noise: torch.Tensor,
                    progress: Optional[Progress] = None) -> torch.Tensor:
    """The starting point (1, 1, latent), in standard units of w: the mean of w or the best of a few samples.
    `progress` hears step 0 after each candidate, so a Cancel raised from it stops here too."""
    device = generator.device
    best_u = torch.zeros(1, 1, generator.arch.latent_dim, device=device)
    candidates = [best_u] + [((w.to(device) - prior.mean.to(device)) / prior.std.to(device)).view(1, 1, -1)
                             for w in prior.samples[: config.candidates]]
    best = math.inf
    for u in candidates:
        ws = (prior.mean.to(device) + u * prior.std.to(device)).expand(-1, generator.num_ws, -1)
        image = synth(ws, noise)
        loss = float(image_loss(image)["loss"])
        if loss < best:
            best, best_u = loss, u
        if progress:
            progress(0, config.total_steps)
    return best_u.clone()
