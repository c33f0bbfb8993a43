"""`cowgan project`: bring a scan onto a model's grid as `prepare` does, then find the latent that reproduces it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

MAX_PHASE_STEPS = 100_000  # optimisation steps of one phase; hours even on a GPU


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "project", help="find the latent (w+ and noise) with which a model reproduces a scan",
        description="Reorient the scan to RAS, resample it at the model's spacing around its centre to the model's "
                    "shape and min-max normalise it (as `cowgan prepare --spacing`), then optimise w, then w+, then the "
                    "noise. Writes projection.safetensors (show it with `cowgan explore --projection`, or Project volume... in the panel), target, reconstruction "
                    "and error NIfTI files, MIPs, convergence.png and projection.json with the correlation and vessel Dice.")
    p.add_argument("--model", default="demo", help="'demo', a native .safetensors model, or a reference model_N.pt")
    p.add_argument("--volume", required=True, help="the scan: NIfTI or NRRD TOF-MRA volume")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier projection's files in --out")
    p.add_argument("--template", default=None, help="register rigidly to this volume first, as the training data was")
    p.add_argument("--steps", type=int, nargs=3, default=None, metavar=("W", "WPLUS", "NOISE"),
                   help=f"optimisation steps of each phase (default 200 200 100, at most {MAX_PHASE_STEPS:,} each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting candidates and noise (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from CircleOfWillisGANLib.errors import InputError, require
    from CircleOfWillisGANLib.outputs import output_folder, prepare_output_dir, refuse_overwrite
    from CircleOfWillisGANLib.generator import load_generator
    from CircleOfWillisGANLib.preprocess import scan_on_model_grid, simpleitk
    from CircleOfWillisGANLib.projection import ProjectionConfig, beyond_samples_note, project
    from CircleOfWillisGANLib.projection_io import OUTPUT_FILES, write_projection_outputs
    from CircleOfWillisGANLib.volume_io import spacing_of

    config = ProjectionConfig(seed=args.seed)
    if args.steps is not None:
        if min(args.steps) < 0 or max(args.steps) > MAX_PHASE_STEPS or sum(args.steps) < 1:
            raise InputError(f"--steps {' '.join(map(str, args.steps))}: give the w, w+ and noise phases' steps as "
                             f"whole numbers from 0 to {MAX_PHASE_STEPS:,}, at least one of them above 0 "
                             "(default 200 200 100)")
        config = dataclasses.replace(config, w_steps=args.steps[0], wplus_steps=args.steps[1], noise_steps=args.steps[2])
    simpleitk()
    require("matplotlib", "the projection's convergence plot", "matplotlib")
    prepare_output_dir(args.out, create=False)
    outputs = {(Path(args.out) / name).resolve() for name in OUTPUT_FILES.values()}
    for given in (args.volume, args.template):
        if given and Path(given).resolve() in outputs:
            raise InputError(f"{given} is where the projection writes one of its results: move it, or choose another --out")
    refuse_overwrite(args.out, OUTPUT_FILES.values(), args.overwrite)
    gen = load_generator(args.model, device=args.device)
    scan = scan_on_model_grid(Path(args.volume), gen.arch.output_shape, spacing_of(gen.affine),
                              None if args.template is None else Path(args.template),
                              normalisation=gen.normalisation)
    with tqdm(total=config.total_steps, desc="projecting", unit="step", disable=None) as bar:
        result = project(gen, scan.volume, config, progress=lambda i, n: bar.update(i - bar.n))
    with output_folder(args.out) as out:  # a failed write leaves no folder this made
        paths = write_projection_outputs(out, result, scan.affine, gen, config, source=str(Path(args.volume).resolve()),
                                         coverage=scan.coverage,
                                         template=str(Path(args.template).resolve()) if args.template else None)
    m = result.metrics
    print(f"wrote {out}: correlation {m['correlation']:.4f}, vessel Dice {m['vessel_dice']:.4f} (threshold "
          f"{m['vessel_threshold']:.3f}; {m['vessel_dice_with_start_noise']:.4f} without the fitted noise), mean "
          f"absolute error {m['mae']:.4f}; latent {paths['latent'].name}")
    beyond = beyond_samples_note(m)
    if beyond:
        print(f"note: {beyond}")
    return 0
