"""Training hyperparameters as one dataclass, with the named presets `paper`, `demo` and `tiny`.

Every regularisation weight is per optimiser step: a term applied once every `interval` steps is multiplied
by `interval` when it is applied (lazy regularisation with interval compensation), so changing an interval
keeps the average pull of the term. The `paper` preset therefore writes the reference's gradient penalty of
10 applied every 16th step as 10 / 16 = 0.625 per step, which gives exactly the reference's loss on the
steps where it is applied.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Tuple

from CircleOfWillisGANLib.architecture import NOISE_MODES, PRESETS as ARCHITECTURES
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.latents import check_seed
from CircleOfWillisGANLib.precision import PRECISIONS

GRADIENT_PENALTIES = ("one-centred", "r1")
AUGMENTATIONS = ("flip", "translation", "cutout", "brightness", "contrast")
MAX_SAMPLE_SEEDS = 64  # volumes on a sample sheet: 16 rows of 4, generated at every snapshot


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of the field's default (e.g. 4.0 -> 4 for an interval), or an InputError naming the field."""
    kind = type(default)
    try:
        if kind is tuple:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError
            element = type(default[0]) if default else str
            return tuple(_coerce(name, v, element()) for v in value)
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError
        if kind is int:
            if float(value) != int(value):
                raise TypeError
            return int(value)
        return float(value)
    except (TypeError, ValueError, OverflowError):
        what = {tuple: "a list", bool: "true or false", str: "text", int: "a whole number", float: "a finite number"}[kind]
        raise InputError(f"training setting {name} must be {what}, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run's recipe; the defaults are the reference's recipe (the `paper` preset)."""

    architecture: str = "paper"              # CircleOfWillisGANLib architecture preset
    batch: int = 32                          # volumes per optimiser step, over all GPUs and accumulation rounds
    micro_batch: int = 8                     # volumes per GPU per forward pass; accumulation = batch / (micro_batch * GPUs)
    g_lr: float = 4e-5                       # generator (and mapping) Adam learning rate
    d_lr_mult: float = 1.5                   # discriminator learning rate = g_lr * d_lr_mult (two time-scale update rule)
    adam_betas: Tuple[float, float] = (0.5, 0.9)
    style_mixing: float = 0.9                # probability that a sample takes two latents with a random crossover block
    gp_kind: str = "one-centred"             # "one-centred": 10 (|grad| - 1)^2 like the reference; "r1": |grad|^2
    gp_weight: float = 0.625                 # per-step weight of the gradient penalty on real volumes
    gp_interval: int = 16                    # apply the gradient penalty every this many steps
    pl_weight: float = 1.0 / 32              # per-step weight of the path-length penalty
    pl_interval: int = 32                    # apply the path-length penalty every this many steps
    pl_start: int = 5000                     # first step at which the path-length penalty is applied
    pl_decay: float = 0.99                   # moving-average decay of the path-length target
    ema_beta: float = 0.995                  # EMA generator decay per EMA update
    ema_interval: int = 10                   # update the EMA generator every this many steps
    ema_start: int = 20000                   # before this step the EMA generator is a copy of the generator
    minibatch_std: int = 0                   # D's minibatch standard-deviation group size; 0: off, like the reference
    augment: Tuple[str, ...] = ("flip", "translation", "cutout")
    augment_p: float = 0.5                   # probability that a volume seen by D is augmented (start value under ADA)
    ada_target: float = 0.0                  # ADA overfitting target for E[sign(D(real))]; 0 keeps augment_p fixed
    ada_interval: int = 4                    # adjust p every this many steps
    ada_kimg: float = 100.0                  # thousands of volumes over which p can move from 0 to 1
    dataset_flip: float = 0.5                # probability of a left-right flip of a real volume when loaded
    precision: str = "auto"                  # auto: bf16 on GPUs that have it, else fp16 (with a scaler); fp32 on CPU
    channels_last: bool = True               # channels-last-3d layout on CUDA
    compile: bool = False                    # torch.compile the networks for steps without double backward (CUDA)
    seed: int = 0
    total_kimg: float = 10000.0              # stop after this many thousand real volumes shown to D
    checkpoint_minutes: float = 15.0         # write the resume state every this many minutes (and on Ctrl-C / SIGTERM)
    snapshot_kimg: float = 50.0              # write a sample sheet (and its morphology distance) every this many kimg
    sample_seeds: Tuple[int, ...] = tuple(range(16))
    max_rollbacks: int = 5                   # consecutive NaN/Inf rollbacks before the run stops with an error
    init: str = ""                           # fine-tuning: run folder or resume state whose G, D and EMA a new run starts from
    noise_mode: str = "native"               # G's noise: "native" (normal); "reference" (uniform cube), set by --init REF.pt

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _coerce(field.name, getattr(self, field.name), field.default))
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"architecture {self.architecture!r} is unknown: use one of {', '.join(ARCHITECTURES)}")
        if self.noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode {self.noise_mode!r} is unknown: use one of {', '.join(NOISE_MODES)}")
        if not 1 <= len(self.sample_seeds) <= MAX_SAMPLE_SEEDS:
            raise InputError(f"sample_seeds holds {len(self.sample_seeds)} seeds: give 1 to {MAX_SAMPLE_SEEDS} (the "
                             "sample sheets' volumes, 4 per row)")
        for seed in (self.seed, *self.sample_seeds):
            check_seed(seed)
        if len(self.adam_betas) != 2:
            raise InputError(f"adam_betas must be two numbers (beta1, beta2), got {list(self.adam_betas)}")
        if self.batch < 1 or self.micro_batch < 1 or self.batch % self.micro_batch:
            raise InputError(f"batch {self.batch} must be a positive multiple of micro_batch {self.micro_batch}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
        if self.gp_kind not in GRADIENT_PENALTIES:
            raise InputError(f"gp_kind {self.gp_kind!r} is unknown: use one of {', '.join(GRADIENT_PENALTIES)}")
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise InputError(f"unknown augmentation(s) {unknown}: choose from {', '.join(AUGMENTATIONS)}")
        if self.minibatch_std < 0:
            raise InputError(f"minibatch_std must be 0 (off) or a group size of at least 1, got {self.minibatch_std}")
        for name in ("gp_interval", "pl_interval", "ema_interval", "ada_interval"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("augment_p", "dataset_flip", "style_mixing", "ema_beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.g_lr <= 0 or self.d_lr_mult <= 0:
            raise InputError("learning rates must be positive")
        if not 0.0 <= self.pl_decay < 1.0 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            name = "pl_decay" if not 0.0 <= self.pl_decay < 1.0 else "adam_betas"
            raise InputError(f"{name} must be at least 0 and below 1, got {getattr(self, name)}")
        for name in ("total_kimg", "ada_kimg", "gp_weight", "pl_weight", "ada_target", "pl_start", "ema_start",
                     "max_rollbacks"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.ada_target >= 1.0:  # E[sign(D(real))] never exceeds 1, so such a target would only ever lower p
            raise InputError(f"ada_target must be below 1 (E[sign(D(real))] is at most 1; e.g. 0.6), got {self.ada_target}")
        for name in ("checkpoint_minutes", "snapshot_kimg"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ada_target > 0 and self.ada_kimg <= 0:  # p would never move, and ada_target would be ignored
            raise InputError(f"ada_kimg must be positive while ada_target is {self.ada_target}, got {self.ada_kimg}: "
                             "give the thousands of volumes over which p may move from 0 to 1 (e.g. 100), or set "
                             "ada_target=0 to keep p fixed")

    def accumulation(self, world_size: int) -> int:
        """Accumulation rounds per optimiser step on each of `world_size` processes."""
        per_round = self.micro_batch * world_size
        if self.batch % per_round:
            raise InputError(f"batch {self.batch} is not divisible by micro_batch {self.micro_batch} x {world_size} "
                             f"processes: choose a batch that is a multiple of {per_round} or change --micro-batch")
        return self.batch // per_round

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise InputError(f"unknown training setting(s) {unknown}: see `cowgan train --help`")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form, stored in the run folder and in exported provenance."""
        d = dataclasses.asdict(self)
        for key in ("adam_betas", "augment", "sample_seeds"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        """Rebuild from `to_dict` output, ignoring keys this version does not know."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def coerce_setting(name: str, value: Any) -> Any:
    """`value` as a TrainConfig stores setting `name` (a list as a tuple, 4.0 as 4), so that equal settings compare
    equal however they were typed; an InputError for an unknown name or a value of the wrong kind."""
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    if name not in defaults:
        raise InputError(f"unknown training setting {name!r}: see `cowgan train --help`")
    return _coerce(name, value, defaults[name])


PRESETS: Dict[str, TrainConfig] = {
    # The reference's recipe: batch 8 x accumulation 4, lr 4e-5 (D x 1.5), Adam (0.5, 0.9), one-centred gradient
    # penalty 10 every 16 steps, path length every 32 steps from step 5000, EMA 0.995 every 10 steps from step
    # 20000, style mixing 0.9, translation + cutout + flip with p = 0.5, dataset flips with p = 0.5.
    "paper": TrainConfig(architecture="paper"),
    # The bundled demo model: a quarter of the channels, R1 and ADA for small data sets, early EMA and path length.
    "demo": TrainConfig(architecture="demo", batch=16, micro_batch=8, g_lr=2e-4, d_lr_mult=1.0, adam_betas=(0.0, 0.99),
                        gp_kind="r1", gp_weight=0.5, gp_interval=16, pl_weight=0.5, pl_interval=8, pl_start=2000,
                        ema_beta=0.999, ema_interval=1, ema_start=500,
                        augment=("flip", "translation", "cutout", "brightness", "contrast"), augment_p=0.0,
                        ada_target=0.6, total_kimg=400.0, snapshot_kimg=10.0),
    # For tests and CI: 16 x 32 x 32 volumes, seconds per step on a CPU; regularisers and EMA from the start.
    "tiny": TrainConfig(architecture="tiny", batch=4, micro_batch=2, g_lr=2e-3, d_lr_mult=1.0, adam_betas=(0.0, 0.99),
                        gp_kind="r1", gp_weight=0.5, gp_interval=2, pl_weight=0.5, pl_interval=2, pl_start=0,
                        ema_beta=0.9, ema_interval=1, ema_start=0,
                        augment=("flip", "translation", "cutout", "brightness", "contrast"), augment_p=0.2,
                        ada_target=0.6, ada_interval=1, ada_kimg=0.1, total_kimg=0.1, snapshot_kimg=0.05,
                        sample_seeds=(0, 1, 2, 3)),
}


def training_preset(name: str) -> TrainConfig:
    """The named training preset, or an InputError listing the names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
