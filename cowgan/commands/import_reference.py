"""`cowgan import-reference`: convert a published-reference checkpoint into a native model file."""

from __future__ import annotations

import argparse
from typing import Any

from CircleOfWillisGANLib.checkpoint import save_checkpoint
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.outputs import output_folder, prepare_output_dir, refuse_overwrite
from CircleOfWillisGANLib.reference_import import import_reference
from CircleOfWillisGANLib.volume_io import DEFAULT_SPACING_MM, check_spacing


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("import-reference", help="convert a reference models/NAME/model_N.pt to .safetensors",
                              description="Convert a checkpoint of the published CoW 3D StyleGAN (EMA networks) "
                                          "into this project's safetensors format, exactly.")
    p.add_argument("checkpoint", help="models/NAME/model_N.pt written by the reference trainer")
    p.add_argument("--config", default=None, help="the run's .config.json (default: beside the checkpoint)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    p.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING_MM), metavar=("X", "Y", "Z"),
                   help="voxel spacing in mm of the training crop (default 0.62 0.62 0.62)")
    p.add_argument("--depth", type=int, default=None, metavar="SLICES",
                   help="slices of the run's volumes, only if its code was edited from the reference's 32 "
                        "(num_layers_z); a power of two up to the image size")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = args.out if str(args.out).endswith(".safetensors") else None
    if out is None:
        raise InputError(f"--out {args.out} must end in .safetensors")
    check_spacing(args.spacing)  # before the output folder is made
    from pathlib import Path

    refuse_overwrite(Path(out).parent, [Path(out).name], args.overwrite)
    prepare_output_dir(Path(out).resolve().parent, create=False)
    ckpt = import_reference(args.checkpoint, args.config, spacing_mm=args.spacing, depth=args.depth)
    with output_folder(Path(out).resolve().parent):
        checksum = save_checkpoint(out, ckpt)
    a = ckpt.architecture
    print(f"wrote {out}: latent_dim {a.latent_dim}, channels {a.generator_channels()}, output {a.output_shape}, "
          f"reference noise; sha256 {checksum[:16]}...")
    return 0
