"""Training speed benchmark: `python -m training.bench [--preset paper] [--device cuda] ...`.

Times every kind of step the two schedules below mix (plain, with the gradient penalty, with the path-length
penalty, with both) on random data of the preset's shape (or `--shape`), and prints volumes/s, step time, peak
memory and TFLOP/s for the reference's schedule (gradient penalty 1 step in 16, no path length: how the
reference's 2.74 s/step was measured) and for the preset's full schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from CircleOfWillisGANLib.architecture import preset
from CircleOfWillisGANLib.benchmark import machine_description, significant
from CircleOfWillisGANLib.errors import InputError, OutputError, script_exit_code
from CircleOfWillisGANLib.files import write_json
from CircleOfWillisGANLib.memory import cpu_peak_mib

from .config import PRECISIONS, PRESETS, TrainConfig, training_preset
from .dataset import RealVolumes
from .distributed import ProcessGroup
from .trainer import Trainer, dataset_architecture

DATA_VOLUMES = 64


KINDS = {"plain": (False, False), "gp": (True, False), "pl": (False, True), "gp+pl": (True, True)}


def schedule_shares(cfg: TrainConfig) -> Dict[str, Dict[str, float]]:
    """Share of each kind of step in the reference's schedule (GP 1 in 16, no PL) and in the preset's, after pl_start."""
    period = cfg.gp_interval * cfg.pl_interval // math.gcd(cfg.gp_interval, cfg.pl_interval)
    full = {name: 0.0 for name in KINDS}
    for i in range(period):
        gp, pl = i % cfg.gp_interval == 0 and cfg.gp_weight > 0, i % cfg.pl_interval == 0 and cfg.pl_weight > 0
        name = next(n for n, flags in KINDS.items() if flags == (gp, pl))
        full[name] += 1.0 / period
    return {"reference_schedule": {"plain": 15 / 16, "gp": 1 / 16},
            "full_schedule": {k: v for k, v in full.items() if v > 0}}


def random_volumes(shape: Sequence[int], device: torch.device, seed: int = 0) -> RealVolumes:
    """A dataset of uniform random volumes held in memory (speed does not depend on content)."""
    array = np.random.default_rng(seed).random((DATA_VOLUMES, *shape), dtype=np.float32).astype(np.float16)
    return RealVolumes([array], device, {"data": {}})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(cfg: TrainConfig, data: RealVolumes, group: ProcessGroup, kinds: List[str]) -> Dict[str, float]:
    """FLOPs of one step of each kind, counted by PyTorch's FLOP counter on eager networks."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = Trainer(dataclasses.replace(cfg, compile=False), data, group)
    out = {}
    for kind in kinds:
        with FlopCounterMode(display=False) as counter:
            trainer.step(*KINDS[kind])
        out[kind] = float(counter.get_total_flops())
    return out


def bench(cfg: TrainConfig, device: torch.device, steps: int, warmup: int, flops: bool = True,
          shape: Optional[Tuple[int, int, int]] = None) -> Dict[str, object]:
    """Time each kind of step on volumes of `shape` (default: the preset's); return per-kind seconds, FLOPs and
    the two amortised schedules."""
    group = ProcessGroup(device=device)
    shape = tuple(shape) if shape else preset(cfg.architecture).output_shape
    data = random_volumes(shape, device)
    shares = schedule_shares(cfg)
    kinds = [k for k in KINDS if any(k in sh for sh in shares.values())]
    flop_counts = count_flops(cfg, data, group, kinds) if flops else {}
    trainer = Trainer(cfg, data, group)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds: Dict[str, float] = {}
    for kind in kinds:
        times = []
        for i in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            stats = trainer.step(*KINDS[kind])
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
            if stats["nonfinite"]:
                raise RuntimeError(f"the benchmark's {kind} step gave non-finite losses")
        seconds[kind] = float(np.median(times))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else cpu_peak_mib() * 2**20
    result: Dict[str, object] = {"preset": cfg.architecture, "shape": list(shape), "device": machine_description(device),
                                 "precision": str(trainer.precision.dtype).replace("torch.", ""),
                                 "batch": cfg.batch, "micro_batch": cfg.micro_batch, "compile": cfg.compile,
                                 "step_seconds": seconds, "step_flops": flop_counts,
                                 "peak_memory_gib": peak / 2**30,
                                 "peak_memory_kind": "CUDA allocated" if device.type == "cuda" else "process RSS"}
    for schedule, share in shares.items():
        t = sum(f * seconds[k] for k, f in share.items())
        entry = {"step_seconds": t, "volumes_per_s": cfg.batch / t}
        if flop_counts:
            entry["tflops_per_s"] = sum(f * flop_counts[k] for k, f in share.items()) / t / 1e12
        result[schedule] = entry
    return result


def report(result: Dict[str, object]) -> str:
    """The benchmark as a few human-readable lines."""
    shape = "x".join(str(s) for s in result["shape"])  # type: ignore[union-attr]
    lines = [f"{result['preset']} at {shape} on {result['device']} ({result['precision']}, batch {result['batch']} "
             f"in micro-batches of {result['micro_batch']}, compile {result['compile']})"]
    for name, s in result["step_seconds"].items():  # type: ignore[union-attr]
        flops = result["step_flops"].get(name)  # type: ignore[union-attr]
        lines.append(f"  {name:6s} step {s:8.3f} s" + (f"  {significant(flops / 1e9):>10} GFLOP" if flops else ""))
    for schedule, label in (("reference_schedule", "GP 1/16, no PL (as the reference was timed)"),
                            ("full_schedule", "the preset's full schedule")):
        e = result[schedule]
        lines.append(f"  {label}: {e['step_seconds']:.3f} s/step = {e['volumes_per_s']:.2f} volumes/s"  # type: ignore[index]
                     + (f", {significant(e['tflops_per_s'])} TFLOP/s" if "tflops_per_s" in e else ""))  # type: ignore[operator]
    lines.append(f"  peak memory {result['peak_memory_gib']:.2f} GiB ({result['peak_memory_kind']})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line of the benchmark."""
    from CircleOfWillisGANLib.precision import resolve_device

    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=None,
                   help="volume shape to train on (default: the preset's; the demo model trains at 16 64 64)")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=5, help="timed steps per kind (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (one extra step per kind)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error(f"--steps {args.steps} must be at least 1 and --warmup {args.warmup} at least 0")
    if args.json:
        _check_json_target(Path(args.json), args.overwrite)
    cfg = training_preset(args.preset).replace(precision=args.precision, compile=args.compile,
                                               **({"micro_batch": args.micro_batch} if args.micro_batch is not None else {}))
    if args.shape:
        try:
            dataset_architecture(cfg.architecture, args.shape)
        except InputError as exc:
            p.error(f"--shape: {exc}")
    device = resolve_device(args.device)
    if args.compile and device.type != "cuda":  # before the FLOP count, which takes minutes at the paper preset
        p.error(f"--compile needs a CUDA GPU (the networks' CPU code cannot be compiled), this is {device.type}: "
                "leave --compile out")
    result = bench(cfg, device, args.steps, args.warmup, flops=not args.no_flops, shape=args.shape)
    print(report(result))
    if args.json:
        write_json(args.json, result)
    return 0


def _check_json_target(path: Path, overwrite: bool) -> None:
    """Refuse a --json target that cannot or should not be written before the benchmark runs, not after."""
    if path.is_dir():
        raise OutputError(f"--json {path} is a folder: name a file in it, e.g. {path / 'bench.json'}")
    if not path.parent.is_dir():
        raise OutputError(f"--json {path}: folder {path.parent} does not exist: create it first")
    if path.exists() and not overwrite:
        raise OutputError(f"--json {path} already exists: choose another file name, or pass --overwrite to replace it")


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "python -m training.bench"))
