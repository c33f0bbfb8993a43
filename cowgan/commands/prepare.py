"""`cowgan prepare`: a folder of NIfTI/NRRD TOF-MRA volumes -> a training dataset (shards + manifest)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from CircleOfWillisGANLib.errors import InputError


def register(subparsers: Any) -> None:
    from CircleOfWillisGANLib.preprocess import NORMALISATIONS

    p = subparsers.add_parser(
        "prepare", help="turn a folder of NIfTI/NRRD volumes into a training dataset",
        description="Validate, reorient to RAS, optionally register rigidly to a template, crop/pad to the training "
                    "shape and normalise every volume, then write memory-mappable shards and a manifest. Bad files "
                    "are skipped and listed in the manifest; the input folder is never modified.")
    p.add_argument("--in", dest="input", required=True, help="folder of .nii, .nii.gz, .nrrd or .nhdr volumes (searched recursively)")
    p.add_argument("--out", required=True, help="new dataset folder (must not exist or be empty)")
    p.add_argument("--pattern", default="*", help="only files whose name matches this glob, e.g. '*_image.nii.gz' "
                                                  "to leave out label maps (default: every NIfTI/NRRD file)")
    p.add_argument("--template", default=None, help="register every volume rigidly (mutual information) to this "
                                                    "volume and crop the ROI at its centre (default: no registration)")
    p.add_argument("--shape", type=int, nargs=3, default=[32, 128, 128], metavar=("D", "H", "W"),
                   help="training volume shape: D axial slices of H (right-left) x W (anterior-posterior) voxels "
                        "(default 32 128 128, the reference's)")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="resample to this isotropic spacing in mm (default: keep each volume's spacing)")
    p.add_argument("--normalise", choices=NORMALISATIONS, default="minmax",
                   help="per-volume min-max to [0, 1] (default, as the reference) or percentiles clipped to [0, 1]")
    p.add_argument("--percentiles", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="percentiles mapped to 0 and 1 with --normalise percentile (default 0.5 99.9)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="parallel processes (default: CPUs, at most 8; never more than the files to prepare; "
                        "at most 4 per CPU)")
    p.add_argument("--shard-size", type=int, default=256, help="volumes per shard file (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from training.prepare import prepare_dataset
    from CircleOfWillisGANLib.checks import check_workers
    from CircleOfWillisGANLib.preprocess import DEFAULT_PERCENTILES, PrepareOptions

    if args.percentiles is not None and args.normalise != "percentile":
        raise InputError("--percentiles only applies with --normalise percentile: add it, or leave --percentiles out")
    if args.shard_size < 1:
        raise InputError(f"--shard-size {args.shard_size} is invalid: use 1 or more")
    check_workers(args.workers)
    from CircleOfWillisGANLib.preprocess import check_training_shape

    check_training_shape(args.shape)
    options = PrepareOptions(shape=tuple(args.shape), spacing=args.spacing, template=args.template,
                             normalisation=args.normalise, percentiles=tuple(args.percentiles or DEFAULT_PERCENTILES))
    manifest = prepare_dataset(Path(args.input), Path(args.out), options, workers=args.workers,
                               shard_size=args.shard_size, progress=not args.no_progress,
                               pattern=args.pattern)
    print(f"wrote {args.out}: {manifest['count']} volumes of {tuple(manifest['shape_dhw'])} at "
          f"{manifest['data']['spacing_mm']} mm; {len(manifest['skipped'])} skipped, {len(manifest['ignored'])} "
          f"other files ignored (reasons in {Path(args.out) / 'manifest.json'})")
    for item in manifest["skipped"]:
        print(f"  skipped {item['source']}: {item['reason']}")
    return 0
