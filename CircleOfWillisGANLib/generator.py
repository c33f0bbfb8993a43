"""The stable generation API that the Slicer module, the CLI, training and evaluation build on."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .architecture import Architecture
from .checkpoint import Checkpoint, load_checkpoint, model_file_format
from .checks import whole_number
from .errors import CheckpointError, InputError
from .generator_model import GeneratorModel, init_weights
from .latents import check_seed, seed_list, truncate, z_from_seeds
from .networks.noise import check_noise, noise_from_seeds
from .precision import (REDUCED_PRECISION_TOLERANCE, exact_float32, relative_max_error, resolve_device,
                        resolve_precision)
from .resources import demo_model_path
from .volume_io import DEFAULT_SPACING_MM, default_affine

log = logging.getLogger(__name__)
MAX_PSI = 2.0
PRECISION_PROBE_SEEDS = (0, 1)
W_REACH_SAMPLES = 256  # seeds whose largest |w| sets the scale of w the model knows
W_REACH_FACTOR = 10.0  # w reaching this many times beyond that is refused: its volume would be saturated noise
StyleMix = Tuple[Union[Sequence[int], torch.Tensor], int]


class CoWGenerator:
    """A loaded generator: seeds, z or w in; (N, D, H, W) float32 volumes in [0, 1] out."""

    def __init__(self, ckpt: Checkpoint, device: str = "auto", source: str = "") -> None:
        self.checkpoint = ckpt
        self.source = source
        self.device = resolve_device(device)
        self.model = GeneratorModel(ckpt.architecture)
        self.model.load_state_dict(ckpt.state_dict)
        self.model.eval().requires_grad_(False).to(self.device)
        self.w_avg = ckpt.w_avg.float().to(self.device)
        self._auto_precision: Optional[str] = None
        self._w_reach: Optional[float] = None
        self.auto_precision_error: Optional[float] = None

    @property
    def arch(self) -> Architecture:
        return self.checkpoint.architecture

    @property
    def metadata(self) -> Dict[str, Any]:
        return self.checkpoint.metadata

    @property
    def normalisation(self) -> Any:
        """How the model's training volumes were scaled, as its metadata records it (None where it records nothing):
        a scan brought to the model is scaled the same way."""
        return self.metadata.get("data", {}).get("normalisation")

    @property
    def num_ws(self) -> int:
        """Number of per-block w vectors (the style layers that mixing and w+ address)."""
        return self.model.synthesis.num_ws

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-RAS affine of generated volumes (NIfTI axes (H, W, D)), from the model's metadata."""
        data = self.metadata.get("data", {})
        if "affine" in data:
            return np.asarray(data["affine"], dtype=float)
        return default_affine(self.arch.output_shape, data.get("spacing_mm", DEFAULT_SPACING_MM))

    @property
    def directions(self) -> Dict[str, torch.Tensor]:
        return self.checkpoint.directions

    def z_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """Latent z for each seed (platform independent)."""
        return z_from_seeds(seed_list(seeds), self.arch.latent_dim)

    @torch.no_grad()
    def mapping(self, z: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """z (N, latent_dim) -> w (N, latent_dim), on the CPU in float32. exact maps each row alone, so a seed's w is
        the same bits whatever else is in the batch (a batched matrix product rounds differently); exact=False maps
        the batch at once, over ten times faster, for statistics over many z that record no seed's w."""
        z = _latent_tensor(z, "z")
        if z.ndim != 2 or z.shape[1] != self.arch.latent_dim:
            raise InputError(f"z must have shape (N, {self.arch.latent_dim}), got {tuple(z.shape)}")
        _check_finite(z, "z")
        z = z.to(self.device)
        w = torch.cat([self.model.mapping(rows).float().cpu() for rows in z.split(1 if exact else len(z))])
        if not torch.isfinite(w).all():
            raise CheckpointError(f"model {self.source} maps finite z to NaN or infinite w: the model is damaged or its "
                                  "training diverged: export an earlier checkpoint, or convert or download it again")
        return w

    def broadcast_w(self, w: torch.Tensor) -> torch.Tensor:
        """(N, latent) or (N, num_ws, latent) -> (N, num_ws, latent)."""
        w = _latent_tensor(w, "w")
        if w.ndim == 2 and w.shape[1] == self.arch.latent_dim:
            return w[:, None, :].expand(-1, self.num_ws, -1).clone()
        if w.ndim == 3 and w.shape[1:] == (self.num_ws, self.arch.latent_dim):
            return w.clone()
        raise InputError(f"w must have shape (N, {self.arch.latent_dim}) or (N, {self.num_ws}, {self.arch.latent_dim}), "
                         f"got {tuple(w.shape)}")

    def noise(self, noise_seeds: Sequence[int]) -> torch.Tensor:
        """The noise input for each noise seed, in the model's convention."""
        return noise_from_seeds(self.arch, seed_list(noise_seeds, "noise seeds"))

    def resolved_precision(self, precision: str = "auto") -> str:
        """The precision that `precision` runs in: "auto" is bf16 (fp16 on GPUs without bf16) where the device is
        fast in it and this model's output on probe volumes stays within REDUCED_PRECISION_TOLERANCE of float32
        (checked once per generator; the error is kept in `auto_precision_error`), else fp32."""
        dtype, _ = resolve_precision(precision, self.device)
        if precision != "auto":
            return precision
        if self._auto_precision is None:
            if dtype == torch.float32:
                self._auto_precision = "fp32"
            else:
                candidate = "bf16" if dtype == torch.bfloat16 else "fp16"
                ws = self.broadcast_w(self.mapping(self.z_from_seeds(PRECISION_PROBE_SEEDS)))
                noise = self.noise(PRECISION_PROBE_SEEDS)
                ref = self.synthesize(ws, noise=noise, precision="fp32", batch_size=1)
                # one volume at a time and as a batch: the two take different arithmetic (styles folded into the
                # weights or applied to the features), and generation uses either
                self.auto_precision_error = max(
                    relative_max_error(self.synthesize(ws, noise=noise, precision=candidate, batch_size=size), ref)
                    for size in (1, len(PRECISION_PROBE_SEEDS)))
                ok = self.auto_precision_error <= REDUCED_PRECISION_TOLERANCE
                self._auto_precision = candidate if ok else "fp32"
                log.info("precision auto: %s differs from fp32 by %.1e of the range on probe volumes: using %s",
                         candidate, self.auto_precision_error, self._auto_precision)
        return self._auto_precision

    @torch.no_grad()
    def synthesize(self, w: torch.Tensor, noise: Optional[torch.Tensor] = None, noise_seed: Any = None,
                   precision: str = "auto", batch_size: Optional[int] = None) -> torch.Tensor:
        """w (N, latent) or (N, num_ws, latent) -> unclamped (N, D, H, W) float32 on the CPU, computed in
        `precision` (see resolved_precision for "auto"); without noise or noise_seed every volume takes noise seed 0."""
        ws = self.broadcast_w(w)
        _check_finite(ws, "w")
        self._check_reach(ws)
        n = ws.shape[0]
        if noise is not None and noise_seed is not None:
            raise InputError("pass noise or noise_seed, not both")
        noise = self.noise(_noise_seeds(noise_seed, n, [0] * n)) if noise is None else check_noise(self.arch, noise, n)
        dtype, channels_last = resolve_precision(self.resolved_precision(precision), self.device)
        batch_size = (8 if self.device.type == "cuda" else 1) if batch_size is None else whole_number(
            batch_size, "batch size", 1)
        out = []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            with exact_float32(self.device, dtype):
                image = self.model.synthesis(ws[sl].to(self.device), noise[sl].to(self.device), dtype, channels_last)
            out.append(image[:, 0].float().cpu())
        volumes = torch.cat(out)
        if not torch.isfinite(volumes).all():  # w is within the model's reach (checked above): the model is at fault
            raise CheckpointError(f"model {self.source} makes NaN or infinite volumes from ordinary w (|w| up to "
                                  f"{float(ws.abs().max()):.3g}): the model is damaged or its training diverged: export "
                                  "an earlier checkpoint, or convert or download it again")
        return volumes

    def _check_reach(self, ws: torch.Tensor) -> None:
        """An InputError for w far beyond anything mapping() makes (W_REACH_FACTOR times the largest |w| of
        W_REACH_SAMPLES seeds, measured once), whose volume would be saturated noise."""
        if self._w_reach is None:
            self._w_reach = float(self.mapping(self.z_from_seeds(range(W_REACH_SAMPLES)), exact=False).abs().max())
        reach = float(ws.abs().max())
        if reach > W_REACH_FACTOR * self._w_reach:
            raise InputError(f"w reaches |w| = {reach:.3g}, {reach / self._w_reach:.0f} times the largest |w| of "
                             f"{W_REACH_SAMPLES} seeds, where the model makes no anatomy: pass w made by mapping() (or "
                             "styles()), moved by a few SD at most")

    def generate(self, seeds: Optional[Sequence[int]] = None, z: Optional[torch.Tensor] = None,
                 w: Optional[torch.Tensor] = None, psi: float = 1.0, noise_seed: Any = None,
                 noise: Optional[torch.Tensor] = None, style_mix: Optional[StyleMix] = None,
                 precision: str = "auto", batch_size: Optional[int] = None) -> np.ndarray:
        """Volumes (N, D, H, W) float32 in [0, 1] from exactly one of seeds, z or w.

        psi truncates towards w_avg; noise_seed (one int, or one per sample) defaults to each seed, and to 0 for every
        volume given as z or w (so a volume's noise does not depend on its place in the batch);
        style_mix = (seeds or w of a second source, crossover block) takes blocks >= crossover from it.
        """
        if seeds is not None:
            seeds = seed_list(seeds)  # read once: a generator of seeds would be empty the second time
        ws = self.styles(seeds=seeds, z=z, w=w, psi=psi, style_mix=style_mix)
        if noise is not None and noise_seed is not None:
            raise InputError("pass noise or noise_seed, not both")
        default_noise = seeds if seeds is not None else [0] * ws.shape[0]
        if noise is None:
            noise = self.noise(_noise_seeds(noise_seed, ws.shape[0], default_noise))
        raw = self.synthesize(ws, noise=noise, precision=precision, batch_size=batch_size)
        return raw.clamp_(0.0, 1.0).numpy()

    def styles(self, seeds: Optional[Sequence[int]] = None, z: Optional[torch.Tensor] = None,
               w: Optional[torch.Tensor] = None, psi: float = 1.0, style_mix: Optional[StyleMix] = None) -> torch.Tensor:
        """The per-block w (N, num_ws, latent) that `generate` would synthesise, after truncation and mixing."""
        if sum(x is not None for x in (seeds, z, w)) != 1:
            raise InputError("pass exactly one of seeds, z or w")
        psi = check_psi(psi)
        if seeds is not None:
            z = self.z_from_seeds(seeds)
        ws = self.broadcast_w(self.mapping(z) if z is not None else w)
        _check_finite(ws, "w")
        if style_mix is not None:
            if not isinstance(style_mix, (tuple, list)) or len(style_mix) != 2:
                raise InputError(f"style_mix must be (seeds or w of the second source, crossover block), e.g. ([9], 3); "
                                 f"got {str(style_mix)[:60]}")
            ws = self._mix(ws, *style_mix)
        return truncate(ws, self.w_avg.cpu(), psi)

    def _mix(self, ws: torch.Tensor, other: Union[Sequence[int], torch.Tensor], crossover: int) -> torch.Tensor:
        if isinstance(crossover, bool) or not isinstance(crossover, (int, np.integer)) or not 0 < crossover < self.num_ws:
            raise InputError(f"style-mixing crossover must be a whole block number from 1 to {self.num_ws - 1}, "
                             f"got {crossover!r}")
        if isinstance(other, (torch.Tensor, np.ndarray)):
            other_ws = self.broadcast_w(other)
        else:
            other_ws = self.broadcast_w(self.mapping(self.z_from_seeds(other)))
        if other_ws.shape[0] == 1:
            other_ws = other_ws.expand(ws.shape[0], -1, -1)
        if other_ws.shape[0] != ws.shape[0]:
            raise InputError(f"style mixing needs one second source or one per sample ({ws.shape[0]}), got {other_ws.shape[0]}")
        ws = ws.clone()
        ws[:, int(crossover):] = other_ws[:, int(crossover):]
        return ws


def check_psi(psi: float) -> float:
    """Validate the truncation psi (0 = the average volume, 1 = no truncation)."""
    try:
        value = float(psi) if not isinstance(psi, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value):
        raise InputError(f"psi {psi!r} is not a number: use a value from 0 to {MAX_PSI}")
    if not 0.0 <= value <= MAX_PSI:
        raise InputError(f"psi {psi} is out of range: use a value from 0 to {MAX_PSI} (1 = no truncation)")
    return value


def _latent_tensor(value: Any, name: str) -> torch.Tensor:
    """A z or w given as a tensor, array or nested list, as a float32 tensor with at least one row."""
    if isinstance(value, torch.Tensor) and value.is_complex() or isinstance(value, np.ndarray) and value.dtype.kind == "c":
        raise InputError(f"{name} is complex: pass real numbers")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if tensor.ndim >= 1 and tensor.shape[0] == 0:
        raise InputError(f"{name} has no rows: pass at least one latent")
    return tensor


def _noise_seeds(noise_seed: Any, n: int, default: Sequence[int]) -> Sequence[int]:
    if noise_seed is None:
        return list(default)
    if isinstance(noise_seed, (int, np.integer)) and not isinstance(noise_seed, bool):
        return [int(noise_seed)] * n
    seeds = seed_list(noise_seed, "noise seeds")
    if len(seeds) != n:
        raise InputError(f"got {len(seeds)} noise seeds for {n} volumes: pass one, or one per volume")
    return seeds


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or infinite values: pass finite numbers")


def load_generator(path: Union[str, Path] = "demo", device: str = "auto") -> CoWGenerator:
    """Load a native checkpoint, the bundled demo model ("demo"), or a reference model_N.pt (converted in memory),
    told apart by the file's first bytes, so a native model renamed .pt loads too (a PyTorch file named .safetensors
    is told to take its name back: torch.load reads every such name as safetensors)."""
    if not isinstance(path, (str, Path)):
        raise InputError(f"the model must be 'demo' or a file path, got {type(path).__name__}")
    if not str(path).strip():
        raise InputError("no model was given: pass 'demo' or the path of a .safetensors model or reference model_N.pt")
    if str(path) == "demo":
        path = demo_model_path()
    path = Path(path)
    kind = model_file_format(path)  # "" for a missing file or a folder: its name decides
    if kind == "pytorch" and not path.name.endswith(".safetensors") or not kind and path.suffix == ".pt":
        from .reference_import import import_reference

        checkpoint = import_reference(str(path))  # first: a missing or damaged file is said alone
        log.info("converted reference checkpoint %s in memory; save it with `cowgan import-reference`", path)
        return CoWGenerator(checkpoint, device, source=str(path))
    return CoWGenerator(load_checkpoint(path), device, source=str(path))


def build_generator(preset: str = "paper", seed: int = 0, device: str = "auto") -> CoWGenerator:
    """A generator with random weights of a named preset, for benchmarks and tests."""
    from .architecture import preset as architecture_preset

    arch = architecture_preset(preset)
    model = init_weights(GeneratorModel(arch), check_seed(seed))
    ckpt = Checkpoint(arch, model.state_dict(), model.mean_w(num_samples=2000), {"name": f"random {preset}"})
    return CoWGenerator(ckpt, device, source=f"random:{preset}")
