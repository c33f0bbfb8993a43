"""`cowgan train`: train or resume a 3D StyleGAN2 run; the same command runs under `torchrun` for several GPUs."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path
from typing import Any, Dict, Optional

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.latents import parse_seeds

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# CLI flag -> TrainConfig field, for the settings people change most; any other field via --set NAME=VALUE.
FLAGS = {"batch": "batch", "micro_batch": "micro_batch", "lr": "g_lr", "d_lr_mult": "d_lr_mult",
         "gp_weight": "gp_weight", "gp_interval": "gp_interval", "pl_weight": "pl_weight", "pl_start": "pl_start",
         "augment_p": "augment_p", "ada_target": "ada_target", "precision": "precision", "seed": "seed",
         "kimg": "total_kimg", "checkpoint_minutes": "checkpoint_minutes", "snapshot_kimg": "snapshot_kimg",
         "init": "init"}


def register(subparsers: Any) -> None:
    from training.config import PRECISIONS, PRESETS

    p = subparsers.add_parser(
        "train", help="train (or resume) a 3D StyleGAN2 on a prepared dataset",
        description="Train on a dataset written by `cowgan prepare`. Re-running the same command resumes the run "
                    "exactly. Several GPUs: `torchrun --nproc-per-node K -m cowgan train ...`. Every preset value "
                    "is listed in docs/training.md.")
    p.add_argument("--data", required=True, help="dataset folder written by `cowgan prepare`")
    p.add_argument("--out", required=True, help="run folder: resume states, samples, TensorBoard logs")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="paper: the reference's recipe; demo: small fast model; tiny: tests (default paper; "
                        "a resumed run keeps its own)")
    p.add_argument("--batch", type=int, help="volumes per optimiser step over all GPUs and accumulation rounds")
    p.add_argument("--micro-batch", type=int, help="volumes per GPU per forward pass")
    p.add_argument("--lr", type=float, help="generator learning rate (D: lr x --d-lr-mult)")
    p.add_argument("--d-lr-mult", type=float, help="discriminator learning-rate multiplier")
    p.add_argument("--gp-weight", type=float, help="gradient-penalty weight per step (0 turns it off)")
    p.add_argument("--gp-interval", type=int, help="apply the gradient penalty every N steps")
    p.add_argument("--pl-weight", type=float, help="path-length weight per step (0 turns it off)")
    p.add_argument("--pl-start", type=int, help="first step with the path-length penalty")
    p.add_argument("--augment-p", type=float, help="augmentation probability (start value with ADA)")
    p.add_argument("--ada-target", type=float, help="ADA target for E[sign(D(real))], e.g. 0.6; 0 = fixed p")
    p.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 on GPUs that have it, else fp16; fp32 on CPU")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks (CUDA)")
    p.add_argument("--seed", type=int, help="random seed of weights, data order and draws")
    p.add_argument("--init", metavar="RUN", help="fine-tune: a new run starts from the generator, discriminator and EMA "
                                                 "of this run folder (or resume state, or a reference run's "
                                                 "models/NAME/model_N.pt) instead of random weights")
    p.add_argument("--kimg", type=float, help="train until D has seen this many thousand real volumes")
    p.add_argument("--checkpoint-minutes", type=float, help="save the resume state every N minutes")
    p.add_argument("--snapshot-kimg", type=float, help="write a sample sheet every N kimg")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other training setting, e.g. --set ema_beta=0.999 (repeatable)")
    p.add_argument("--max-time", default=None, help="stop cleanly (and save) after this long: 3600, 90m, 12h, 2d")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (under torchrun: each process's GPU)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar (log lines only)")
    p.set_defaults(run=run)


def parse_duration(text: Optional[str]) -> Optional[float]:
    """'3600', '90m', '12h', '2d' -> seconds; None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"--max-time {text!r} is not a duration: use seconds or a number with s, m, h or d (90m)")
    return float(match.group(1)) * TIME_UNITS[match.group(2) or "s"]


def overrides_from(args: argparse.Namespace) -> Dict[str, Any]:
    """TrainConfig fields set on the command line (flags and --set)."""
    from training.config import TrainConfig

    out = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
    if args.compile:
        out["compile"] = True
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise InputError(f"--set {item!r}: use NAME=VALUE with a setting from docs/training.md")
        if name == "sample_seeds":  # seeds as everywhere else (0-15, 1,5,9), not literal_eval's 0 - 15 = -15
            out[name] = tuple(parse_seeds(value))
            continue
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
        if isinstance(out[name], str) and out[name].strip().lower() in ("true", "false"):  # as docs/training.md writes
            out[name] = out[name].strip().lower() == "true"
        if name == "augment" and isinstance(out[name], str):
            out[name] = tuple(v for v in out[name].split(",") if v)
    return out


def run(args: argparse.Namespace) -> int:
    import logging

    from training.config import training_preset
    from training.distributed import init_process_group, shutdown
    from training.loop import resolve_config, train

    max_time = parse_duration(args.max_time)
    overrides = overrides_from(args)
    if args.preset:
        overrides.setdefault("architecture", args.preset)
    cfg = resolve_config(Path(args.out), training_preset(args.preset or "paper"), overrides)
    group = init_process_group(args.device)
    if not group.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train(cfg, Path(args.data), Path(args.out), group, max_time_s=max_time, bar=not args.no_progress)
    finally:
        shutdown(group)
    if group.is_main:
        print(f"{result.reason}: step {result.step}, {result.kimg:.2f} kimg, {result.seconds / 60:.1f} min of training; "
              f"resume state {result.checkpoint}" + ("" if result.finished else "; run the same command to resume"))
    return 0
