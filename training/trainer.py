"""The networks, optimisers and one training step (discriminator phase, then generator phase).

All randomness of a step (latents, noise, data flips, augmentation, path-length probes) is drawn from
generators seeded by (seed, rollback count, step, phase, global micro-batch index), so a step is a pure
function of the state: resuming is bit-identical, and K processes compute the same step as one process
with K times the accumulation rounds.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from CircleOfWillisGANLib.architecture import Architecture, preset
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.generator_model import GeneratorModel, init_weights
from CircleOfWillisGANLib.networks import Discriminator
from CircleOfWillisGANLib.networks.noise import noise_shape
from CircleOfWillisGANLib.precision import cpu_has_fast_bf16, cuda_has_native_bf16

from .augment import AdaptiveAugment, augment
from .config import TrainConfig
from .dataset import DataOrder, RealVolumes
from .distributed import ProcessGroup, all_reduce_gradients, all_reduce_sum
from .losses import d_hinge, g_hinge, gradient_penalty, path_lengths

log = logging.getLogger(__name__)
PHASE_D, PHASE_G = 1, 2
# On the CPU, oneDNN's bfloat16 weight gradients of 3D convolutions on small grids come out NaN in a few percent of
# steps (torch 2.13, AVX512-BF16); discriminator blocks whose input has at most this many voxels run in float32.
CPU_FLOAT32_MAX_VOXELS = 512


@dataclasses.dataclass(frozen=True)
class Precision:
    """Arithmetic of the forward passes: compute dtype, loss scaling (fp16 only) and memory layout."""

    dtype: torch.dtype
    scaler: bool
    channels_last: bool

    @property
    def autocast(self) -> bool:
        return self.dtype != torch.float32


def resolve_training_precision(name: str, device: torch.device, channels_last: bool) -> Precision:
    """auto: bf16 on GPUs that have it, fp16 with a loss scaler on older GPUs, fp32 on the CPU."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if cuda_has_native_bf16() else "fp16"
        else:
            name = "fp32"
    if name == "fp16" and device.type != "cuda":
        raise InputError("fp16 training needs a CUDA GPU: use --precision bf16 or fp32 on the CPU")
    if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("oneDNN has no bfloat16 kernels for this CPU (they need AVX-512), so bf16 training runs many times "
                    "slower than fp32 (the demo recipe: 404 s for its first step against 30-60 s on a 2-core AVX2 "
                    "CPU): stop and start the run with --precision fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(dtype, dtype == torch.float16, channels_last and device.type == "cuda")


def run_small_discriminator_blocks_in_float32(D: Discriminator, arch: Architecture) -> None:
    """Make D's blocks on grids of at most CPU_FLOAT32_MAX_VOXELS voxels, and its final convolution, skip autocast.

    They cost little, and it keeps the CPU's occasional NaN bfloat16 weight gradients out of training.
    """
    shape = arch.output_shape
    for i, block in enumerate(D.blocks):
        if shape[0] * shape[1] * shape[2] <= CPU_FLOAT32_MAX_VOXELS:
            _without_autocast(block)
        shape = tuple(-(-s // t) for s, t in zip(shape, arch.downsample_strides(i)))
    _without_autocast(D.final_conv)


def _without_autocast(module: nn.Module) -> None:
    forward = module.forward

    def float32_forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    module.forward = float32_forward  # type: ignore[method-assign]


def step_seed(*parts: int) -> int:
    """A 63-bit seed that mixes integers well (nearby steps get unrelated streams)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def dataset_architecture(name: str, shape: Any, noise_mode: str = "native") -> Architecture:
    """The named architecture preset with the dataset's volume shape (and the noise convention of the generator)."""
    return dataclasses.replace(preset(name), output_shape=tuple(shape), noise_mode=noise_mode)


class Trainer:
    """Holds G, D, the EMA generator, optimisers, scalers and regulariser state; `step()` trains one step."""

    def __init__(self, cfg: TrainConfig, data: RealVolumes, group: ProcessGroup) -> None:
        self.cfg = cfg
        self.data = data
        self.group = group
        self.device = group.device
        if cfg.compile and self.device.type != "cuda":
            raise InputError(f"--compile needs a CUDA GPU (the networks' CPU code cannot be compiled), this run is on "
                             f"{self.device.type}: leave it out (a run started with it: --set compile=False)")
        self.arch = dataset_architecture(cfg.architecture, data.shape, cfg.noise_mode)
        self.accumulation = cfg.accumulation(group.world_size)
        self.precision = resolve_training_precision(cfg.precision, self.device, cfg.channels_last)
        self.G = init_weights(GeneratorModel(self.arch), cfg.seed).to(self.device)
        self.D = init_weights(Discriminator(self.arch, cfg.minibatch_std), cfg.seed + 1).to(self.device)
        if self.precision.channels_last:
            self.D = self.D.to(memory_format=torch.channels_last_3d)
        if self.precision.autocast and self.device.type == "cpu":
            run_small_discriminator_blocks_in_float32(self.D, self.arch)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = cfg.adam_betas
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.g_lr * cfg.d_lr_mult, betas=betas)
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)
        self.ada = AdaptiveAugment(cfg.augment_p, cfg.ada_target, cfg.ada_interval, cfg.ada_kimg, cfg.batch)
        self.order = DataOrder(data.count, cfg.seed)
        self.pl_mean: Optional[float] = None
        self.step_index = 0
        self.rollbacks = 0
        self._fast_D = torch.compile(self.D) if cfg.compile else self.D
        self._fast_synthesis = torch.compile(self.G.synthesis) if cfg.compile else self.G.synthesis

    # -- randomness and inputs -------------------------------------------------------------------------------
    def _rng(self, phase: int, micro: int) -> torch.Generator:
        seed = step_seed(self.cfg.seed, self.rollbacks, self.step_index, phase, micro)
        return torch.Generator(device=self.device).manual_seed(seed)

    def _styles(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """Per-block w (n, num_ws, latent) with style mixing: a random crossover block for a fraction of samples."""
        num_ws, latent = self.G.synthesis.num_ws, self.arch.latent_dim
        z = torch.randn(2 * n, latent, generator=gen, device=self.device)
        w = self.G.mapping(z)
        mixed = torch.rand(n, generator=gen, device=self.device) < self.cfg.style_mixing
        crossover = torch.randint(1, max(2, num_ws), (n,), generator=gen, device=self.device)
        crossover = torch.where(mixed, crossover, torch.full_like(crossover, num_ws))
        second = torch.arange(num_ws, device=self.device)[None, :] >= crossover[:, None]
        return torch.where(second[:, :, None], w[n:, None, :], w[:n, None, :])

    def _noise(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """Noise in the generator's convention: a uniform [0, 1) cube for a fine-tuned reference, else normal."""
        draw = torch.rand if self.arch.noise_mode == "reference" else torch.randn
        return draw(noise_shape(self.arch, n), generator=gen, device=self.device)

    def _reals(self, gen: torch.Generator, micro: int) -> torch.Tensor:
        n = self.cfg.micro_batch
        start = self.step_index * self.cfg.batch + micro * n
        reals = self.data.gather(self.order.indices(start, n))
        flip = torch.rand(n, generator=gen, device=self.device) < self.cfg.dataset_flip
        return torch.where(flip.view(-1, 1, 1, 1, 1), reals.flip(3), reals)

    def _synthesis(self, ws: torch.Tensor, noise: torch.Tensor, eager: bool = False) -> torch.Tensor:
        fn = self.G.synthesis if eager else self._fast_synthesis
        with self._autocast():
            return fn(ws, noise, self.precision.dtype, self.precision.channels_last)

    def _discriminate(self, x: torch.Tensor, gen: torch.Generator, eager: bool = False) -> torch.Tensor:
        x = augment(x, self.ada.p, self.cfg.augment, gen)
        if self.precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            return (self.D if eager else self._fast_D)(x)

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.autocast)

    # -- one step --------------------------------------------------------------------------------------------
    def step(self, gp: Optional[bool] = None, pl: Optional[bool] = None) -> Dict[str, float]:
        """Train D then G on one batch and return the step's statistics, averaged over all processes.

        `gp` / `pl` force the regularisers on or off (benchmarks); None follows the schedule. A non-finite loss
        or gradient leaves the networks as they were and returns stats["nonfinite"] = 1. With a loss scaler (fp16),
        a penalty that overflowed while its inner gradient was scaled, the loss itself finite, is the scaler's
        business, as an overflowing gradient is: that network skips this step and the scale backs off
        (stats["overflow_d"] / ["overflow_g"] = 1), with no rollback, which would restore the old scale.
        """
        cfg = self.cfg
        gp_now = cfg.gp_weight > 0 and self.step_index % cfg.gp_interval == 0 if gp is None else gp
        pl_now = (cfg.pl_weight > 0 and self.step_index >= cfg.pl_start and self.step_index % cfg.pl_interval == 0
                  if pl is None else pl)
        d_stats = self._discriminator_phase(gp_now)
        if d_stats["nonfinite"]:
            return d_stats
        g_stats = self._generator_phase(pl_now)
        if g_stats["nonfinite"]:
            return g_stats
        if pl_now and not g_stats["overflow_g"]:
            mean_length = g_stats["path_length"]
            decay = cfg.pl_decay
            self.pl_mean = mean_length if self.pl_mean is None else decay * self.pl_mean + (1 - decay) * mean_length
        self.ada.observe(d_stats["real_sign"], d_stats["real_count"])
        self.ada.update(self.step_index)
        self._update_ema()
        self.step_index += 1
        stats = {**d_stats, **g_stats, "augment_p": self.ada.p, "gp_applied": float(gp_now), "pl_applied": float(pl_now)}
        stats["nonfinite"] = 0.0
        return stats

    def _discriminator_phase(self, gp_now: bool) -> Dict[str, float]:
        cfg, rounds = self.cfg, self.accumulation
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)  # loss, gp, sign sum, count, nonfinite, overflow
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        for r in range(rounds):
            micro = r * self.group.world_size + self.group.rank
            gen = self._rng(PHASE_D, micro)
            with torch.no_grad():
                fakes = self._synthesis(self._styles(gen, cfg.micro_batch), self._noise(gen, cfg.micro_batch))
            reals = self._reals(gen, micro).requires_grad_(gp_now)
            real_logits = self._discriminate(reals, gen, eager=gp_now)
            fake_logits = self._discriminate(fakes, gen, eager=gp_now)
            loss = d_hinge(real_logits, fake_logits)
            total = loss
            if gp_now:
                penalty = gradient_penalty(reals, real_logits, cfg.gp_kind, self._loss_scale(self.scaler_D)).mean()
                total = total + penalty * (cfg.gp_weight * cfg.gp_interval)
                sums[1] += penalty.detach() / rounds
            self.scaler_D.scale(total / rounds).backward()
            sums[0] += loss.detach() / rounds
            sums[2] += real_logits.detach().float().sign().sum()
            sums[3] += real_logits.shape[0]
        all_reduce_gradients(self.D.parameters(), self.group)
        sums[4], sums[5] = self._nonfinite(sums[:2], self.D, self.scaler_D)
        total = all_reduce_sum(sums, self.group)
        world = self.group.world_size
        stats = {"loss_d": float(total[0]) / world, "penalty_gp": float(total[1]) / world,
                 "real_sign": float(total[2]), "real_count": float(total[3]), "nonfinite": float(total[4] > 0),
                 "overflow_d": float(total[5] > 0 and total[4] == 0)}
        self._apply(self.opt_D, self.scaler_D, stats["nonfinite"], stats["overflow_d"])
        return stats

    def _generator_phase(self, pl_now: bool) -> Dict[str, float]:
        cfg, rounds = self.cfg, self.accumulation
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, pl penalty, length, nonfinite, overflow
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        for r in range(rounds):
            micro = r * self.group.world_size + self.group.rank
            gen = self._rng(PHASE_G, micro)
            ws = self._styles(gen, cfg.micro_batch)
            images = self._synthesis(ws, self._noise(gen, cfg.micro_batch), eager=pl_now)
            loss = g_hinge(self._discriminate(images, gen))
            total = loss
            if pl_now:
                lengths = path_lengths(ws, images, gen, self._loss_scale(self.scaler_G))
                sums[2] += lengths.detach().double().mean() / rounds
                if self.pl_mean is not None:
                    penalty = (lengths - self.pl_mean).square().mean()
                    total = total + penalty * (cfg.pl_weight * cfg.pl_interval)
                    sums[1] += penalty.detach() / rounds
            self.scaler_G.scale(total / rounds).backward()
            sums[0] += loss.detach() / rounds
        all_reduce_gradients(self.G.parameters(), self.group)
        sums[3], sums[4] = self._nonfinite(sums[:3], self.G, self.scaler_G)
        total = all_reduce_sum(sums, self.group)
        world = self.group.world_size
        stats = {"loss_g": float(total[0]) / world, "penalty_pl": float(total[1]) / world,
                 "path_length": float(total[2]) / world, "nonfinite": float(total[3] > 0),
                 "overflow_g": float(total[4] > 0 and total[3] == 0)}
        self._apply(self.opt_G, self.scaler_G, stats["nonfinite"], stats["overflow_g"])
        return stats

    @staticmethod
    def _apply(optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler, nonfinite: float, overflow: float) -> None:
        """Take the optimiser step unless the step failed; after an overflow, back the loss scale off instead."""
        if overflow:
            scaler.update(new_scale=scaler.get_scale() * scaler.get_backoff_factor())
        elif not nonfinite:
            scaler.step(optimiser)
            scaler.update()
        optimiser.zero_grad(set_to_none=True)

    @staticmethod
    def _loss_scale(scaler: torch.amp.GradScaler) -> float:
        return float(scaler.get_scale()) if scaler.is_enabled() else 1.0

    @staticmethod
    def _nonfinite(losses: torch.Tensor, net: nn.Module, scaler: torch.amp.GradScaler) -> Tuple[torch.Tensor, torch.Tensor]:
        """(failed, overflowed) as 0/1: failed if a loss is not finite, or (without a loss scaler, which skips such
        steps itself) a gradient; with a scaler, a non-finite penalty beside a finite loss (losses[0]) overflowed
        under the scale instead."""
        no, yes = losses.new_zeros((), dtype=torch.float64), losses.new_ones((), dtype=torch.float64)
        if scaler.is_enabled() and bool(torch.isfinite(losses[0])) and not bool(torch.isfinite(losses[1:]).all()):
            return no, yes
        bad = ~torch.isfinite(losses).all()
        if not scaler.is_enabled():
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if grads:
                bad = bad | ~torch.isfinite(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).all()
        return bad.double(), no

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Copy G before `ema_start`, then every `ema_interval` steps move the EMA weights towards G. A fine-tuning run
        (`init`) starts from its source's EMA and averages from its first step: a copy would throw that EMA away."""
        cfg, step = self.cfg, self.step_index
        if step < cfg.ema_start and not cfg.init:
            beta = 0.0
        elif step % cfg.ema_interval == 0:
            beta = cfg.ema_beta
        else:
            return
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def kimg(self) -> float:
        """Thousands of real volumes shown to D so far."""
        return self.step_index * self.cfg.batch / 1000.0

    def state_dict(self) -> Dict[str, Any]:
        """Everything a bit-identical resume needs (tensors stay on their device; callers copy to CPU).

        The random state is (seed, step, rollbacks): every draw of a step comes from generators seeded by them.
        """
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "ada": self.ada.state_dict(), "pl_mean": self.pl_mean, "step": self.step_index,
            "rollbacks": self.rollbacks,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a state written by `state_dict` (from this or another process count)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        _load_scaler(self.scaler_G, state["scaler_G"])
        _load_scaler(self.scaler_D, state["scaler_D"])
        self.ada.load_state_dict(state["ada"])
        self.pl_mean = state["pl_mean"]
        self.step_index = int(state["step"])
        self.rollbacks = int(state["rollbacks"])


def _load_scaler(scaler: torch.amp.GradScaler, state: Dict[str, Any]) -> None:
    """Restore a loss scaler; a run saved without one (bf16 or fp32) resumed where the precision needs one (fp16 on a
    GPU without bf16) starts a fresh scaler, as a new run does."""
    if state:
        scaler.load_state_dict(state)
