"""`cowgan generate`: volumes from a model, each with a JSON sidecar, a MIP picture and optionally a surface."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from tqdm import tqdm

from CircleOfWillisGANLib.files import file_sha256
from CircleOfWillisGANLib.errors import CoWGANError, InputError, require
from CircleOfWillisGANLib.outputs import (output_folder, prepare_output_dir, refuse_overwrite, volume_output_names,
                                         write_volume_outputs)
from CircleOfWillisGANLib.generator import CoWGenerator, check_psi, load_generator
from CircleOfWillisGANLib.latents import MAX_SEEDS_PER_LIST, check_seed, lerp, parse_seeds, slerp
from CircleOfWillisGANLib.memory import check_batch_fits
from CircleOfWillisGANLib.mip import mip_panel, save_gif
from CircleOfWillisGANLib.precision import PRECISIONS
from CircleOfWillisGANLib.surface import SURFACE_FORMATS
from CircleOfWillisGANLib.volume_io import spacing_of

DEFAULT_SEEDS = "1-4"
DEFAULT_STEPS = 16  # frames of an interpolation
MAX_GIF_FRAMES = 1000  # a longer animation's GIF shows evenly spaced frames: every frame would be held in memory
MIN_INDEX_DIGITS = 3  # frame numbers are padded to at least this many digits (and more where a run has more frames)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("generate", help="generate volumes (NIfTI + JSON + MIP [+ surface]) from a model",
                              description="Generate TOF-MRA volumes from seeds, an interpolation, or noise variations.")
    p.add_argument("--model", default="demo", help="'demo', a native .safetensors model, or a reference model_N.pt")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names already in --out")
    p.add_argument("--seeds", default=None, help="seeds like 1-8, 3,5,9 or 1-4,10 (default 1-4)")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi in [0, 2]; 1 = none, 0.7 = typical anatomy")
    p.add_argument("--noise-seed", type=int, default=None, help="one noise seed for every volume (default: each volume's seed)")
    p.add_argument("--interpolate", nargs=2, type=int, metavar=("A", "B"), help="interpolate between seeds A and B")
    p.add_argument("--steps", type=int, default=None, help=f"frames of an interpolation (default {DEFAULT_STEPS}; "
                   f"its GIF shows at most {MAX_GIF_FRAMES} evenly spaced ones)")
    p.add_argument("--space", choices=("z", "w"), default=None, help="interpolate by slerp in z (default) or lerp in w")
    p.add_argument("--noise-variations", type=int, default=0, metavar="K",
                   help=f"K volumes per seed: same w, new noise (a GIF per seed shows at most {MAX_GIF_FRAMES} of them)")
    p.add_argument("--surface", action="store_true", help="also write a smoothed vessel surface")
    p.add_argument("--surface-format", choices=SURFACE_FORMATS, default=None, help="with --surface (default vtp)")
    p.add_argument("--threshold", type=float, default=None, help="surface threshold (default: Otsu on the bright tail)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--batch-size", type=int, default=None,
                   help="volumes synthesised together (default 8 on CUDA, 1 on the CPU; 1 reproduces bit for bit alone)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    psi = check_psi(args.psi)
    jobs = _plan(args)
    if args.surface:
        require("vtk", "Vessel surfaces (--surface)", "vtk")
    prepare_output_dir(args.out, create=False)
    surface_format = "." + args.surface_format if args.surface else None
    refuse_overwrite(args.out, [name for job in jobs for name in volume_output_names(job["stem"], surface_format)]
                     + list(dict.fromkeys(f"{job['animation']}.gif" for job in jobs if job.get("animation"))),
                     args.overwrite)
    gen = load_generator(args.model, device=args.device)
    gen.resolved_precision(args.precision)  # a precision this device cannot run stops before the folder is made
    model_info = {"source": str(args.model), "path": gen.source, "name": gen.metadata.get("name"),
                  "sha256": file_sha256(gen.source) if Path(gen.source).is_file() else None,
                  "content_sha256": gen.checkpoint.sha256 or None}
    frames: Dict[str, List[np.ndarray]] = {}  # the GIF frames of the animation being written, until its last frame
    batch = args.batch_size or (8 if gen.device.type == "cuda" else 1)
    check_batch_fits(gen, min(batch, len(jobs)), "--batch-size")
    written = 0
    bar = tqdm(total=len(jobs), desc="generating", unit="volume", disable=None)
    with output_folder(args.out) as out, bar as progress:
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            _resolve(chunk, gen, args)
            volumes = gen.generate(w=torch.cat([job["w"] for job in chunk]), psi=psi, precision=args.precision,
                                   noise_seed=[job["noise_seed"] for job in chunk], batch_size=batch)
            for job, volume in zip(chunk, volumes):
                sidecar = {"model": model_info, "seed": job.get("seed"), "psi": psi, "noise_seed": job["noise_seed"],
                           "noise_mode": gen.arch.noise_mode, "z": job.get("z"), "w": job["w"][0].tolist(),
                           **_arithmetic(gen, args.precision, chunk), **job.get("extra", {})}
                try:
                    write_volume_outputs(out, job["stem"], volume, gen.affine, sidecar, surface=args.surface,
                                         surface_format="." + args.surface_format, threshold=args.threshold)
                except CoWGANError as exc:
                    done = (f" (the {written} volume{'s' if written > 1 else ''} before it "
                            f"{'are' if written > 1 else 'is'} complete in {out})") if written else ""
                    raise type(exc)(f"{job['stem']}: {exc}{done}") from exc
                written += 1
                if job.get("in_gif"):
                    frames.setdefault(job["animation"], []).append(
                        mip_panel(volume, spacing_of(gen.affine), orientation_letters=True))
                if job.get("last_frame"):
                    save_gif(out / f"{job['animation']}.gif", frames.pop(job["animation"]), fps=8)
                progress.update(1)
    print(f"wrote {len(jobs)} volumes with sidecars and MIPs{' and surfaces' if args.surface else ''} to {out}"
          f"{_gif_note(jobs)}")
    return 0


def _arithmetic(gen: CoWGenerator, precision: str, chunk: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What besides the latents sets a volume's last bits, for its sidecar: precision, device, torch version and the
    batch it was synthesised in (one volume alone and several together take different arithmetic)."""
    device_name = torch.cuda.get_device_name(gen.device) if gen.device.type == "cuda" else None
    return {"precision": gen.resolved_precision(precision), "device": str(gen.device), "device_name": device_name,
            "torch_version": torch.__version__, "batch_size": len(chunk), "batch": [job["stem"] for job in chunk]}


def _frames(animation: str, count: int) -> List[Dict[str, Any]]:
    """Animation bookkeeping for each of `count` frames: which go into the GIF (at most MAX_GIF_FRAMES, evenly
    spaced from the first) and which one ends it, when the GIF is written and its frames are let go."""
    stride = -(-count // MAX_GIF_FRAMES)
    return [{"animation": animation, "in_gif": i % stride == 0, "last_frame": i == count - 1} for i in range(count)]


def _gif_note(jobs: List[Dict[str, Any]]) -> str:
    """A note for the final line where the GIFs leave frames out."""
    shown = sum(1 for job in jobs if job.get("in_gif"))
    animated = sum(1 for job in jobs if job.get("animation"))
    if shown == animated:
        return ""
    return f" (the GIFs show {shown:,} of the {animated:,} frames, evenly spaced: at most {MAX_GIF_FRAMES:,} per GIF)"


def _index_format(count: int) -> str:
    """Zero padding for frame numbers 0 to count - 1, so that file names sort in frame order."""
    return f"0{max(MIN_INDEX_DIGITS, len(str(count - 1)))}d"


def _plan(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Validate the request and list the volumes to write, before loading anything heavy."""
    _refuse_ignored_options(args)
    args.seeds, args.space = DEFAULT_SEEDS if args.seeds is None else args.seeds, args.space or "z"
    args.steps = DEFAULT_STEPS if args.steps is None else args.steps
    args.surface_format = args.surface_format or SURFACE_FORMATS[0]
    if not 2 <= args.steps <= MAX_SEEDS_PER_LIST:
        raise InputError(f"--steps must be from 2 to {MAX_SEEDS_PER_LIST:,}, got {args.steps}")
    if not 0 <= args.noise_variations <= MAX_SEEDS_PER_LIST:
        raise InputError(f"--noise-variations must be from 0 to {MAX_SEEDS_PER_LIST:,}, got {args.noise_variations}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.noise_seed is not None:
        check_seed(args.noise_seed)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold} gives no surface: generated volumes lie in [0, 1], so choose a "
                         "value between 0 and 1, or leave it out for Otsu's threshold")
    if args.interpolate:
        a, b = (check_seed(s) for s in args.interpolate)
        digits = _index_format(args.steps)
        return [{"kind": "interpolation", "a": a, "b": b, "t": i / (args.steps - 1), "stem": f"interp_{a}_{b}_{i:{digits}}",
                 **frame} for i, frame in enumerate(_frames(f"interp_{a}_{b}", args.steps))]
    seeds = list(dict.fromkeys(parse_seeds(args.seeds)))
    if len(seeds) * args.noise_variations > MAX_SEEDS_PER_LIST:
        raise InputError(f"{len(seeds):,} seeds x {args.noise_variations:,} noise variations is more than "
                         f"{MAX_SEEDS_PER_LIST:,} volumes in one run: ask for fewer, in several runs")
    if args.noise_variations:
        digits = _index_format(args.noise_variations)
        return [{"kind": "seed", "seed": s, "noise_seed": k, "stem": f"seed{s:04d}_noise{k:{digits}}", **frame}
                for s in seeds for k, frame in enumerate(_frames(f"seed{s:04d}_noise", args.noise_variations))]
    return [{"kind": "seed", "seed": s, "stem": f"seed{s:04d}"} for s in seeds]


def _refuse_ignored_options(args: argparse.Namespace) -> None:
    """An option the chosen mode would silently ignore is an InputError: the user meant something else."""
    clashes = [("--seeds", args.seeds is not None, "--interpolate", bool(args.interpolate),
                "an interpolation runs from seed A to seed B"),
               ("--noise-variations", bool(args.noise_variations), "--interpolate", bool(args.interpolate),
                "choose one of them"),
               ("--noise-seed", args.noise_seed is not None, "--noise-variations", bool(args.noise_variations),
                "noise variations use noise seeds 0 to K-1")]
    for option, given, other, other_given, why in clashes:
        if given and other_given:
            raise InputError(f"{option} cannot be combined with {other} ({why}): leave one out")
    needs = [("--threshold", args.threshold is not None, "--surface", args.surface),
             ("--surface-format", args.surface_format is not None, "--surface", args.surface),
             ("--space", args.space is not None, "--interpolate A B", bool(args.interpolate)),
             ("--steps", args.steps is not None, "--interpolate A B", bool(args.interpolate))]
    for option, given, required, present in needs:
        if given and not present:
            raise InputError(f"{option} only applies with {required}: add {required.split()[0]}, or leave {option} out")


def _resolve(jobs: List[Dict[str, Any]], gen: CoWGenerator, args: argparse.Namespace) -> None:
    """Fill in z, w and noise seeds now that the model (and its latent size) is known, a batch at a time."""
    for job in jobs:
        if job["kind"] == "interpolation":
            za, zb = gen.z_from_seeds([job["a"]]), gen.z_from_seeds([job["b"]])
            if args.space == "z":
                z = slerp(za, zb, job["t"])
                job["w"], job["z"] = gen.mapping(z), z[0].tolist()
            else:
                job["w"] = lerp(gen.mapping(za), gen.mapping(zb), job["t"])
            job.setdefault("noise_seed", job["a"] if args.noise_seed is None else args.noise_seed)
            job["extra"] = {"interpolation": {"seed_a": job["a"], "seed_b": job["b"], "t": job["t"], "space": args.space,
                                              "method": "slerp" if args.space == "z" else "lerp"}}
        else:
            z = gen.z_from_seeds([job["seed"]])
            job["w"], job["z"] = gen.mapping(z), z[0].tolist()
            if "noise_seed" not in job:
                job["noise_seed"] = job["seed"] if args.noise_seed is None else args.noise_seed
        job["w"] = torch.as_tensor(job["w"])
