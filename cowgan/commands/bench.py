"""`cowgan bench`: generation speed on this machine's CPU (and GPU when present), as a table."""

from __future__ import annotations

import argparse
from typing import Any, List

import torch

from CircleOfWillisGANLib.architecture import synthesis_flops
from CircleOfWillisGANLib.benchmark import BenchResult, bench_generation, format_table, machine_description, significant
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.generator import build_generator, load_generator
from CircleOfWillisGANLib.memory import check_batch_fits
from CircleOfWillisGANLib.precision import PRECISIONS, resolve_device, resolve_precision

MAX_BATCH = 1024  # volumes per timed batch; a larger one only runs out of memory
MAX_REPEATS = 10_000  # timed repeats per row


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark generation speed (ms/volume, GFLOP/s, memory)",
                              description="Time generation of random-weight models (or a given model) on CPU and GPU.")
    p.add_argument("--preset", default=None, help="random-weight preset to time (paper, demo, tiny; default paper)")
    p.add_argument("--model", default=None, help="time this model instead of a random-weight preset")
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--batch", nargs="+", type=int, default=None, help=f"batch sizes (default: 1 on CPU; 1 and 8 on GPU; at most {MAX_BATCH})")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32", "auto"])
    p.add_argument("--repeats", type=int, default=5, help=f"timed repeats per row (default 5, at most {MAX_REPEATS:,})")
    p.set_defaults(run=run)


def _check_sizes(batches: List[int], repeats: int) -> None:
    """Refuse batch sizes and repeat counts below 1 or so large that a run runs out of memory or never ends."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise InputError(f"--repeats {repeats} is out of range: use 1 to {MAX_REPEATS:,}")
    for batch in batches:
        if not 1 <= batch <= MAX_BATCH:
            raise InputError(f"--batch {batch} is out of range: use 1 to {MAX_BATCH} volumes per batch")


def _preset(args: argparse.Namespace) -> str:
    """The random-weight preset to time (default paper); --preset with --model is refused, as it would be ignored."""
    if args.model and args.preset is not None:
        raise InputError(f"--preset {args.preset} and --model {args.model} both name what to time: pass one of them")
    return args.preset or "paper"


def run(args: argparse.Namespace) -> int:
    preset = _preset(args)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    _check_sizes(args.batch or [1], args.repeats)
    for device in devices:  # every device and precision is checked before minutes of timing that an error would lose
        for precision in args.precision:
            resolve_precision(precision, resolve_device(device))
    generators = [load_generator(args.model, device) if args.model else build_generator(preset, 0, device)
                  for device in devices]
    plan = [(gen, args.batch or ([1, 8] if gen.device.type == "cuda" else [1])) for gen in generators]
    for gen, batches in plan:
        check_batch_fits(gen, max(batches), "--batch")
    results: List[BenchResult] = []
    for device, (gen, batches) in zip(devices, plan):
        print(f"{device}: {machine_description(gen.device)}")
        for batch in batches:
            for precision in args.precision:
                results.append(bench_generation(gen, batch, precision, args.repeats))
    label = args.model or f"{preset} preset, random weights"
    print(f"\n{label}: {significant(synthesis_flops(gen.arch) / 1e9)} GFLOP per volume (convolutions)")
    print(format_table(results))
    return 0

