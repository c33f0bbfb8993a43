"""Latent codes: z from seeds (identical on every platform), interpolation, truncation, seed ranges."""

from __future__ import annotations

import re
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

from .checks import finite_number, whole_number
from .errors import InputError

MAX_SEED = 2**32 - 1
MAX_SEEDS_PER_LIST = 1_000_000
SEED_ITEM = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", re.ASCII)  # '7' or '3-9'


def check_seed(seed: int) -> int:
    """Return `seed` as an int in [0, 2^32 - 1] or raise an InputError."""
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed {seed!r} is not an integer: use whole numbers from 0 to {MAX_SEED}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed {seed} is out of range: use whole numbers from 0 to {MAX_SEED}")
    return int(seed)


def check_seed_run(first: int, count: int, count_flag: str) -> None:
    """Refuse seeds `first` .. `first` + `count` - 1 that run past the largest seed, naming the flags, before any
    volume is made."""
    if first + count - 1 > MAX_SEED:
        raise InputError(f"--seed {first} with {count_flag} {count} runs past the largest seed {MAX_SEED}: "
                         f"use --seed {MAX_SEED - count + 1} or lower")


def seed_list(seeds: Any, name: str = "seeds") -> list:
    """`seeds` (one int, or a list, range, array or tensor of ints) as a non-empty list of checked ints."""
    if isinstance(seeds, str):
        raise InputError(f"{name} {seeds!r} is text: pass integers, e.g. [1, 2, 3] (parse_seeds('1-3') reads text)")
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return [check_seed(int(seeds))]
    if isinstance(seeds, (np.ndarray, torch.Tensor)) and seeds.dtype not in (torch.bool, np.bool_):
        if seeds.dtype.is_floating_point if isinstance(seeds, torch.Tensor) else seeds.dtype.kind == "f":
            raise InputError(f"{name} must be integers, got a {seeds.dtype} array")
        seeds = seeds.tolist()
        if isinstance(seeds, int):  # a 0-d array or tensor is one seed
            return [check_seed(seeds)]
    try:
        values = list(seeds)
    except TypeError:
        raise InputError(f"{name} must be a list of integers, e.g. [1, 2, 3]; got {type(seeds).__name__}") from None
    if not values:
        raise InputError(f"{name} is empty: pass at least one seed")
    return [check_seed(s) for s in values]


def parse_seeds(text: str) -> List[int]:
    """Parse '1-8', '3,5,9' or '1-4,10' into a list of seeds."""
    seeds: List[int] = []
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) > 1 and not all(parts):  # "1,,2", "1," or ",1": a seed was probably left out
        raise InputError(f"seeds {text!r} have an empty item between commas: write them like 1-8, 3,5,9 or 1-4,10")
    for part in parts:
        if part:
            run = _seed_range(part, text)
            if len(seeds) + len(run) > MAX_SEEDS_PER_LIST:
                raise InputError(f"seeds {text!r} list more than {MAX_SEEDS_PER_LIST:,} volumes: "
                                 "split the work into several runs")
            seeds.extend(run)
    if not seeds:
        raise InputError(f"no seeds in {text!r}: write them like 1-8, 3,5,9 or 1-4,10")
    return seeds


def _seed_range(part: str, text: str) -> range:
    """One comma-separated item of a seed list, '7' or '3-9', as a range of checked seeds."""
    match = SEED_ITEM.fullmatch(part)
    if not match:  # int() alone would also read "1_0" as 10 and other scripts' digits
        raise InputError(f"cannot read seeds {text!r}: write them like 1-8, 3,5,9 or 1-4,10")
    first = int(match.group(1))
    last = first if match.group(2) is None else int(match.group(2))
    if last < first:
        raise InputError(f"cannot read seeds {text!r}: a range goes from the smaller seed to the larger, like 1-8")
    return range(check_seed(first), check_seed(last) + 1)


def z_from_seeds(seeds: Sequence[int], latent_dim: int) -> torch.Tensor:
    """One standard-normal z per seed from NumPy's PCG64 stream: the same numbers on every platform."""
    whole_number(latent_dim, "latent_dim", 1)
    rows = [np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim) for s in seed_list(seeds)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b (falls back to lerp when they are parallel)."""
    a, b = _interpolation_ends(a, b, t)
    a_n = a / a.norm(dim=-1, keepdim=True)
    b_n = b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    ratio_a = torch.where(safe, torch.sin((1.0 - t) * omega) / torch.where(safe, so, torch.ones_like(so)), torch.full_like(so, 1.0 - t))
    ratio_b = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, torch.ones_like(so)), torch.full_like(so, t))
    return ratio_a * a + ratio_b * b


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation (the right path in W, whose distribution is not spherical); t = 0 gives a and t = 1
    gives b bit for bit (torch.lerp steps from the nearer end), so an interpolation ends on its seeds' own w.
    a and b of different dtypes (float64 w from a sidecar, float32 from the mapping) meet in the wider one, and
    whole numbers in float32 (torch.lerp takes floats only)."""
    a, b = _interpolation_ends(a, b, t)
    return torch.lerp(a, b, float(t))


def _interpolation_ends(a: Any, b: Any, t: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """a and b as tensors of one shape and floating dtype (arrays taken as they are, whole numbers as float32, two
    dtypes meeting in the wider), after checking them and t."""
    try:
        a, b = torch.as_tensor(a), torch.as_tensor(b)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"interpolation needs two latents (tensors or arrays of numbers), got {type(a).__name__} "
                         f"and {type(b).__name__}") from None
    if a.shape != b.shape or a.is_complex() or b.is_complex():
        raise InputError(f"interpolation needs two real latents of one shape, got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    finite_number(t, "the interpolation position t (0 = a, 1 = b)")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise InputError("the latents to interpolate contain NaN or infinite values: pass finite latents")
    return a, b


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """w' = w_avg + psi (w - w_avg): psi < 1 trades diversity for typicality; psi 1 returns w itself, bit for bit."""
    return w if psi == 1.0 else w_avg + psi * (w - w_avg)
