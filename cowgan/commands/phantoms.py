"""`cowgan phantoms`: a set of synthetic TOF-MRA Circle of Willis volumes with TopCoW labels and variants."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from CircleOfWillisGANLib.checks import check_workers
from CircleOfWillisGANLib.errors import InputError, OutputError, require
from CircleOfWillisGANLib.files import is_within
from CircleOfWillisGANLib.latents import check_seed
from CircleOfWillisGANLib.outputs import prepare_output_dir
from CircleOfWillisGANLib.phantoms import FORCEABLE, PhantomConfig, VariantPrevalence, load_table, parse_overrides
from CircleOfWillisGANLib.phantoms.writer import (MANIFEST, PREVIEW, check_count, check_no_foreign_files, set_files,
                                                  staged_set, write_phantom_set)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "phantoms", help="write synthetic CoW TOF-MRA volumes with TopCoW labels (NIfTI + JSON + CSV)",
        description="Generate procedural Circle of Willis phantoms: TOF-MRA-like image, TopCoW label map and a JSON "
                    "of every sampled parameter per case, plus manifest.csv. Case i depends only on (--seed, i).")
    p.add_argument("--n", type=int, required=True, help="number of phantoms (at most 1,000,000)")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=0, help="set seed (default 0; 0 to 2^32 - 1)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="grid size (default 32 128 128)")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="voxel spacing in mm: one value (isotropic) or x y z (default 0.62)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1; never more than --n; "
                   "at most 4 per CPU)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=P",
                   help="override a prevalence, e.g. fetal_pca_left=0.5 (repeatable)")
    p.add_argument("--variant-table", default=None, metavar="JSON", help="JSON object of prevalences to override")
    p.add_argument("--force", action="append", default=[], choices=FORCEABLE, metavar="VARIANT",
                   help=f"make a variant certain in every case (repeatable): {', '.join(FORCEABLE)}")
    p.add_argument("--preview", action="store_true", help=f"write {PREVIEW}, a contact sheet of axial MIPs")
    p.add_argument("--no-compress", action="store_true", help="write .nii instead of .nii.gz (faster)")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="also write the images as a training dataset in this new folder, as `cowgan prepare` makes it "
                        "from them, without SimpleITK (the phantoms already lie on their grid)")
    p.add_argument("--overwrite", action="store_true", help="replace a phantom set already in --out (once the new set "
                   "is complete its files take the old set's place, so the sets do not mix)")
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> PhantomConfig:
    """The phantom configuration the command-line arguments describe."""
    table = load_table(args.variant_table) if args.variant_table else VariantPrevalence()
    table = table.with_overrides(parse_overrides(args.variant))
    kwargs: dict = {"prevalence": table, "force": tuple(args.force)}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    if args.spacing:
        if len(args.spacing) not in (1, 3):
            raise InputError(f"--spacing takes one value or three (x y z), got {len(args.spacing)}")
        kwargs["spacing_mm"] = tuple(args.spacing * 3 if len(args.spacing) == 1 else args.spacing)
    return PhantomConfig(**kwargs)


def run(args: argparse.Namespace) -> int:
    """Write the phantom set the arguments ask for; a failed or interrupted run leaves --out as it was."""
    check_count(args.n)
    check_seed(args.seed)
    check_workers(args.workers)
    config = build_config(args)
    require("scipy.ndimage", "cowgan phantoms", "scipy")
    prepare_output_dir(args.out, create=False)
    check_no_foreign_files(args.out, args.preview)
    if args.dataset:
        from CircleOfWillisGANLib.preprocess import check_training_shape

        check_training_shape(config.shape)
        _check_dataset_folder(Path(args.dataset), Path(args.out))
    existing = set_files(args.out)
    if existing and not args.overwrite:
        raise OutputError(f"{args.out} already holds a phantom set ({len(existing)} files, e.g. {existing[0].name}); a "
                          "new set would mix with it: choose a new --out, or pass --overwrite to replace it")
    with staged_set(args.out) as stage, tqdm(total=args.n, desc="phantoms", unit="case", disable=None) as bar:
        manifest = write_phantom_set(stage, args.n, args.seed, config, workers=args.workers, preview=args.preview,
                                     compress=not args.no_compress, progress=bar.update)
        with manifest.open(encoding="utf-8") as rows:
            cut = [row["case"] for row in csv.DictReader(rows) if row["circle_in_view"] == "0"]
    if cut:
        log.warning("%d of %d phantoms do not show their whole circle on this grid (%s): their label maps' variant "
                    "vectors differ from the sampled variants (manifest column circle_in_view = 0); use a larger "
                    "--shape or --spacing", len(cut), args.n, ", ".join(cut[:3]) + (", ..." if len(cut) > 3 else ""))
    log.info("wrote %d phantoms to %s (%s%s)", args.n, args.out, MANIFEST, f", {PREVIEW}" if args.preview else "")
    if args.dataset:
        from training.prepare import prepare_phantom_set

        dataset = prepare_phantom_set(args.out, args.dataset)
        log.info("wrote %s: %d volumes of %s, for `cowgan train --data %s`", args.dataset, dataset["count"],
                 tuple(dataset["shape_dhw"]), args.dataset)
    return 0


def _check_dataset_folder(dataset: Path, out: Path) -> None:
    """Refuse a --dataset folder that could not be written, before minutes of phantoms are made."""
    if is_within(dataset.resolve(), out.resolve()):
        raise OutputError(f"--dataset {dataset} is inside --out {out}, which holds the phantom set: choose a folder "
                          "outside it")
    if is_within(out.resolve(), dataset.resolve()):
        raise OutputError(f"--out {out} is inside --dataset {dataset}, which must hold the dataset alone: write the "
                          "phantoms to a folder beside it")
    if dataset.exists() and (not dataset.is_dir() or any(dataset.iterdir())):
        raise OutputError(f"--dataset {dataset} already exists and is not empty: choose a new folder or remove it")
    existing = next(p for p in (dataset.absolute(), *dataset.absolute().parents) if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cowgan-probe-", dir=existing))
    except OSError as exc:
        raise OutputError(f"--dataset {dataset} cannot be created in {existing} ({exc.strerror or exc}): choose a "
                          "writable location") from None
