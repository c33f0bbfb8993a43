"""`cowgan export`: a training run's EMA generator -> the native .safetensors model that everything else loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from CircleOfWillisGANLib.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export a training run's EMA generator as a .safetensors model",
                              description="Write the EMA generator of a run's latest resume state, with w_avg, latent "
                                          "directions, data geometry and training provenance, as a native model.")
    p.add_argument("run_dir", metavar="RUN", nargs="?", default=None,
                   help="the folder given to `cowgan train --out` (optional with --state RUN/checkpoints/NAME.pt)")
    p.add_argument("--out", required=True, help="output MODEL.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    p.add_argument("--name", default=None, help="model name stored in the file (default: the file name)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage precision of the weights; float16 halves the file (default float32)")
    p.add_argument("--state", default=None, help="a specific resume state (default: RUN/checkpoints/latest.pt, or previous.pt "
                                                   "if latest.pt is damaged)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.outputs import output_folder, refuse_overwrite
    from training.export import export_run

    if args.run_dir is None and args.state is None:
        raise InputError("pass RUN, the folder given to `cowgan train --out`, or --state RUN/checkpoints/NAME.pt")
    out = _model_path(args.out)
    refuse_overwrite(out.parent, [out.name], args.overwrite)
    with output_folder(out.resolve().parent):
        run_dir = Path(args.run_dir) if args.run_dir else None
        ckpt = export_run(run_dir, out, name=args.name, state_path=args.state, dtype=args.dtype)
    prov = ckpt.metadata["provenance"]
    print(f"wrote {out}: step {prov['step']} ({prov['kimg']:.1f} kimg), output {ckpt.architecture.output_shape}, "
          f"{len(ckpt.directions)} direction sets; sha256 {ckpt.sha256[:16]}...")
    return 0


def _model_path(text: str) -> Path:
    """The --out model file; refused unless it is a name followed by .safetensors, which every loader expects."""
    out = Path(text)
    if out.name.lower() == ".safetensors":
        raise InputError(f"--out {out} has no file name before .safetensors: name the model, e.g. "
                         f"{out.with_name('model.safetensors')}")
    if out.suffix != ".safetensors":
        raise InputError(f"--out {out} must end in .safetensors")
    return out
