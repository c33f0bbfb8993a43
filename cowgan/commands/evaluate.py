"""`cowgan evaluate`: compare generated volumes (a folder or a model's outputs) with real ones; write
metrics.json and a self-contained HTML report. Input files are only read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from CircleOfWillisGANLib.errors import InputError, require
from CircleOfWillisGANLib.evaluation.fid2d import fid2d_status
from CircleOfWillisGANLib.outputs import prepare_output_dir, refuse_overwrite
from CircleOfWillisGANLib.files import is_within, path_problem
from CircleOfWillisGANLib.latents import MAX_SEEDS_PER_LIST, check_seed, check_seed_run
from CircleOfWillisGANLib.precision import resolve_device

if TYPE_CHECKING:
    from CircleOfWillisGANLib.evaluation.volumes import VolumeSet


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="metrics and an HTML report: generated vs real volumes",
                              description="Compare generated TOF-MRA volumes with real ones: morphology features, "
                                          "MedicalNet distance, 2D FID, PRD, precision/recall, density/coverage, "
                                          "diversity, memorisation and TopCoW variants, with a real-vs-real baseline.")
    p.add_argument("--real", required=True, help="folder of real NIfTI volumes (held out from training)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fake", help="folder of generated NIfTI volumes")
    source.add_argument("--model", help="generate the volumes from this model ('demo', .safetensors or reference .pt)")
    p.add_argument("--n", type=int, default=None, help="with --model: how many volumes (default: as many as real volumes)")
    p.add_argument("--psi", type=float, default=None, help="with --model: truncation psi (default 1 = none)")
    p.add_argument("--train", help="folder of the model's training volumes, for the memorisation check")
    p.add_argument("--out", required=True, help="report folder (created if needed; gets metrics.json and report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0): same seed, same numbers")
    p.add_argument("--medicalnet", metavar="PTH", help="MedicalNet resnet_10_23dataset.pth for the MedicalNet distance (MD)")
    p.add_argument("--inception-weights", metavar="PTH", help="pytorch-fid's InceptionV3 weights for the 2D FID")
    p.add_argument("--real-labels", help="folder of TopCoW label maps of the real volumes (default: label files beside them)")
    p.add_argument("--fake-labels", help="folder of TopCoW label maps of the generated volumes")
    p.add_argument("--resample", action="store_true", help="resample generated volumes onto the real grid if they differ")
    p.add_argument("--vessel-threshold", type=float, default=0.3, help="vessel mask threshold on min-max normalised intensity")
    p.add_argument("--prd-clusters", type=int, default=10, help="PRD k-means clusters (paper: 10)")
    p.add_argument("--prd-runs", type=int, default=10, help="PRD clustering runs averaged (paper: 10)")
    p.add_argument("--diversity-volumes", type=int, default=32, help="volumes per set for pairwise MS-SSIM (default 32)")
    p.add_argument("--no-baseline", action="store_true", help="skip the real-vs-real baseline")
    p.add_argument("--cache", default=None, help="feature cache folder (default ~/.cache/cowgan/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (generation and MedicalNet)")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    for flag in ("n", "psi"):
        if getattr(args, flag) is not None and args.model is None:
            raise InputError(f"--{flag} only applies with --model: drop it or pass --model")
    check_seed(args.seed)
    if args.n is not None:
        _check_count_and_seeds(args.seed, args.n)
    if not 0.0 < args.vessel_threshold < 1.0:
        raise InputError(f"--vessel-threshold must lie in (0, 1), got {args.vessel_threshold}")
    if args.prd_clusters < 2 or args.prd_runs < 1:
        raise InputError("--prd-clusters must be at least 2 and --prd-runs at least 1")
    if args.diversity_volumes < 2:
        raise InputError(f"--diversity-volumes must be at least 2, got {args.diversity_volumes}")
    resolve_device(args.device)  # 'cuda' without a GPU is said before any volume is read
    for module, feature, package in (("matplotlib", "The evaluation report's plots", "matplotlib"),
                                     ("sklearn.cluster", "PRD (k-means clustering)", "scikit-learn"),
                                     ("scipy.ndimage", "Vessel morphology features", "scipy"),
                                     ("skimage.morphology", "Vessel centrelines", "scikit-image")):
        require(module, feature, package)  # a missing package is said before minutes of work, not after
    fid2d_status(args.inception_weights)
    problem = path_problem(args.medicalnet) if args.medicalnet else None
    if problem:
        raise InputError(f"--medicalnet {args.medicalnet} {problem}: pass MedicalNet's resnet_10_23dataset.pth, "
                         "or leave --medicalnet out")
    if args.medicalnet:  # a wrong file stops here, not after every volume was generated and measured
        from CircleOfWillisGANLib.evaluation.medicalnet import check_medicalnet_file

        check_medicalnet_file(args.medicalnet)
    prepare_output_dir(args.out, create=False)
    for name in ("real", "fake", "train", "real_labels", "fake_labels"):
        folder = getattr(args, name)
        if folder and is_within(args.out, folder):
            raise InputError(f"--out {args.out} is the --{name.replace('_', '-')} folder or inside it: write the report "
                             "to its own folder outside the inputs")
    _check_cache(args)
    if args.fake_labels and args.model:
        raise InputError("--fake-labels goes with --fake: a model's volumes have no label maps; leave it out")
    for name in ("fake", "train"):
        folder = getattr(args, name)
        if folder and Path(folder).resolve() == Path(args.real).resolve():
            raise InputError(f"--{name} {folder} is the --real folder: pass the {'generated' if name == 'fake' else 'training'}"
                             " volumes' own folder")
    if args.train and args.fake and Path(args.train).resolve() == Path(args.fake).resolve():
        raise InputError(f"--train {args.train} is the --fake folder: every volume would match itself and be reported "
                         "memorised; pass the training volumes' own folder")
    from CircleOfWillisGANLib.evaluation.report import REPORT_FILES

    refuse_overwrite(Path(args.out).resolve(), REPORT_FILES, args.overwrite)


def _check_cache(args: argparse.Namespace) -> None:
    """Refuse a --cache folder that is an input folder or inside one, so no cache file lands among the user's volumes."""
    if args.cache is None or args.no_cache:
        return
    for name in ("real", "fake", "train", "real_labels", "fake_labels"):
        folder = getattr(args, name)
        if folder and is_within(args.cache, folder):
            raise InputError(f"--cache {args.cache} is the --{name.replace('_', '-')} folder or inside it: pass a cache "
                             "folder outside the inputs, or leave --cache out")


def _check_count_and_seeds(seed: int, n: int) -> None:
    """Refuse an --n that generate would refuse, or seeds --seed .. --seed + n - 1 past the largest seed, before
    any volume is generated."""
    if not 2 <= n <= MAX_SEEDS_PER_LIST:
        raise InputError(f"--n must be from 2 to {MAX_SEEDS_PER_LIST:,}, got {n}")
    check_seed_run(seed, n, "--n")


def _model_set(args: argparse.Namespace, real: VolumeSet, n: int, psi: float) -> VolumeSet:
    """The model's volumes on the real grid; a grid that differs (without --resample) is refused before any
    volume is generated."""
    import dataclasses

    from tqdm import tqdm

    from CircleOfWillisGANLib.evaluation.volumes import array_set, check_same_grid, planned_set
    from CircleOfWillisGANLib.generator import load_generator

    _check_count_and_seeds(args.seed, n)
    gen = load_generator(args.model, device=args.device)
    planned = check_same_grid(real, planned_set("generated", gen.arch.output_shape, gen.affine), args.resample)
    seeds = list(range(args.seed, args.seed + n))
    volumes = [gen.generate(seeds=[s], psi=psi)[0] for s in tqdm(seeds, desc="generating", unit="volume", disable=None)]
    made = array_set(volumes, [f"seed{s:04d}" for s in seeds], gen.affine, "generated", f"model {args.model}")
    return check_same_grid(real, dataclasses.replace(made, notes=planned.notes), args.resample)


def run(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.evaluation.cache import default_cache_dir
    from CircleOfWillisGANLib.evaluation.compare import CompareConfig
    from CircleOfWillisGANLib.evaluation.memorisation import MemorisationConfig
    from CircleOfWillisGANLib.evaluation.morphology import MorphologyConfig
    from CircleOfWillisGANLib.evaluation.pipeline import EvaluationConfig, evaluate
    from CircleOfWillisGANLib.evaluation.report import write_report
    from CircleOfWillisGANLib.evaluation.variants import find_label_maps
    from CircleOfWillisGANLib.evaluation.volumes import check_distinct_files, check_same_grid, folder_set
    from CircleOfWillisGANLib.generator import check_psi

    _check(args)
    psi = check_psi(1.0 if args.psi is None else args.psi)
    real = folder_set(args.real, "real")
    check_distinct_files(real, args.real)
    train = check_same_grid(real, folder_set(args.train, "training"), args.resample) if args.train else None
    fake = check_same_grid(real, folder_set(args.fake, "generated"), args.resample) if args.fake else None
    for folder, labels, volume_set in ((args.real, args.real_labels, real), (args.fake, args.fake_labels, fake)):
        if labels:  # a label folder that matches nothing stops here, not after the metrics or the generation
            find_label_maps([item.name for item in volume_set.items], Path(folder), Path(labels))
    if fake is None:
        fake = _model_set(args, real, args.n or len(real), psi)
    config = EvaluationConfig(
        seed=args.seed, compare=CompareConfig(prd_clusters=args.prd_clusters, prd_runs=args.prd_runs, seed=args.seed),
        morphology=MorphologyConfig(threshold=args.vessel_threshold), memorisation=MemorisationConfig(),
        diversity_volumes=args.diversity_volumes, baseline=not args.no_baseline, medicalnet_weights=args.medicalnet,
        inception_weights=args.inception_weights, device=resolve_device(args.device).type,
        cache_dir=None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir())
    result = evaluate(real, fake, train, config, {"real": args.real_labels, "generated": args.fake_labels})
    inputs: Dict[str, Any] = {"real": f"{args.real} ({len(real)} volumes)",
                              "generated": f"{args.fake} ({len(fake)} volumes)" if args.fake else
                              f"model {args.model}, seeds {args.seed}-{args.seed + len(fake) - 1}, psi {psi:g}",
                              "training": f"{args.train} ({len(train)} volumes)" if train is not None else "none",
                              "grid (D x H x W)": "x".join(map(str, real.shape)), "seed": args.seed}
    paths = write_report(prepare_output_dir(args.out), result, inputs)
    _print_summary(result.metrics, paths)
    return 0


def _print_summary(metrics: Dict[str, Any], paths: Dict[str, Path]) -> None:
    lines: List[str] = []
    for space, s in metrics["feature_spaces"].items():
        g, b = s["generated_vs_real"], s.get("real_vs_real", {})
        fd, fd_b = g["frechet_distance"].get("value"), b.get("frechet_distance", {}).get("value")
        auc, auc_b = g["prd"].get("auc"), b.get("prd", {}).get("auc")
        lines.append(f"{space}: FD {_num(fd)} (real vs real {_num(fd_b)}), AUC-PRD {_num(auc)} (real vs real {_num(auc_b)})")
    for reason in metrics["skipped"].values():
        lines.append(reason)
    print("\n".join(lines + [f"wrote {paths['metrics']} and {paths['report']}"]))


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4g}"
