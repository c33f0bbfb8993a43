"""`cowgan name-directions`: anatomically named sliders ("Left Pcom", ...) from a variant classifier and boundaries in W."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from CircleOfWillisGANLib.errors import CoWGANError, InputError, OutputError

HELD_OUT = 0.2  # share of the labelled cases, drawn at random, kept out of the classifier's fit to measure it
MIN_LABELLED = 5  # fit_classifier needs 4 cases once HELD_OUT is drawn from them


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "name-directions", help="add anatomically named latent directions (Pcom, fetal PCA, A1, Acom) to a model",
        description="Train a variant classifier on labelled volumes (a `cowgan phantoms` folder, TopCoW-style "
                    "*_image/*_label pairs or TopCoW's release folder, brought onto the model's grid), label generated samples with it, fit a linear "
                    "boundary in W per variant and write a copy of the model whose direction sliders include them. "
                    "Rare variants (A1 absent, Acom absent) need an enriched labelled set beside the natural one, e.g. "
                    "`cowgan phantoms --variant acom_absent=0.4 ...`.")
    p.add_argument("--model", required=True, help="a native .safetensors model")
    p.add_argument("--labelled", nargs="+", default=None, metavar="DIR",
                   help="folders of labelled volumes to train the classifier on (80%%; 20%% held out to measure it)")
    p.add_argument("--classifier-epochs", type=int, default=20, help="training epochs of the classifier (default 20)")
    p.add_argument("--classifier", default=None, help="use this trained classifier instead of --labelled")
    p.add_argument("--out", required=True, help="output MODEL.safetensors (the input model is not modified)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files at --out (and its classifier)")
    p.add_argument("--samples", type=int, default=2000, help="generated samples to fit the boundaries on (default 2000)")
    p.add_argument("--psi", type=float, default=1.0, help="truncation of those samples (default 1: the full distribution)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the samples (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.checkpoint import save_checkpoint
    from CircleOfWillisGANLib.outputs import output_folder, prepare_output_dir, refuse_overwrite
    from CircleOfWillisGANLib.generator import check_psi, load_generator
    from CircleOfWillisGANLib.latents import MAX_SEEDS_PER_LIST, check_seed, check_seed_run
    from CircleOfWillisGANLib.named_directions import fit_boundaries, named, sample_calls, store_named_directions
    from CircleOfWillisGANLib.volume_io import spacing_of

    check_seed(args.seed)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"--out {out} must end in .safetensors")
    if (args.labelled is None) == (args.classifier is None):
        raise InputError("pass exactly one of --labelled DIR (train a classifier) or --classifier FILE")
    if not 20 <= args.samples <= MAX_SEEDS_PER_LIST:
        raise InputError(f"--samples {args.samples} cannot fit boundaries: use from 20 to {MAX_SEEDS_PER_LIST:,} "
                         "(default 2000)")
    check_seed_run(args.seed, args.samples, "--samples")
    if args.classifier and Path(args.classifier).resolve() == out.resolve():
        raise InputError(f"--out {out} is the --classifier file: write the named model to another file (the "
                         "classifier is kept as it is)")
    psi = check_psi(args.psi)
    prepare_output_dir(out.parent, create=False)
    refuse_overwrite(out.parent, [out.name], args.overwrite)
    trained = _classifier_path(out)
    if args.labelled and trained.exists() and not args.overwrite:
        raise OutputError(f"{trained} already exists (a classifier trained for this --out earlier): reuse it with "
                          f"--classifier {trained} instead of --labelled, or pass --overwrite to train a new one")
    gen = load_generator(args.model, device=args.device)
    if Path(gen.source).resolve() == out.resolve():
        raise InputError(f"--out {out} is the input model: write the named copy to another file (the input model is "
                         "kept as it is)")
    with output_folder(out.parent):
        classifier = _classifier(args, out, tuple(gen.arch.output_shape), spacing_of(gen.affine),
                                 gen.normalisation, gen.device)
        try:
            with tqdm(total=args.samples, desc="labelling samples", unit="volume", disable=None) as bar:
                w, calls = sample_calls(gen, classifier, args.samples, args.seed, psi,
                                        progress=lambda i, n: bar.update(i - bar.n))
            fit = fit_boundaries(w, calls, classifier.keys,
                                 classifier_accuracy=classifier.info.get("held_out_balanced_accuracy"))
            info = {"samples": args.samples, "psi": psi, "seed": args.seed, "classifier": classifier.info,
                    "boundary_accuracy": fit.accuracy, "prevalence": fit.prevalence, "skipped": fit.skipped}
            directions = named(store_named_directions(gen, fit, info))
            save_checkpoint(out, gen.checkpoint)
        except CoWGANError as exc:
            if not args.labelled:
                raise
            raise type(exc)(f"{exc} (the variant classifier trained for it is kept in {trained}: reuse it with "
                            "--classifier, or pass --overwrite with --labelled to train a new one)") from exc
    print(f"wrote {out} with {len(directions)} named directions:")
    for d, key in zip(directions, fit.keys):
        measured = "unmeasured" if fit.accuracy[key] is None else f"{fit.accuracy[key]:.3f}"
        print(f"  {d.label}: present in {fit.prevalence[key]:.0%} of samples, boundary balanced accuracy on held-out "
              f"samples {measured}")
    for key, reason in fit.skipped.items():
        print(f"  no direction for {key}: {reason}")
    return 0


def _classifier_path(out: Path) -> Path:
    """Where the classifier trained for `out` is kept, beside it."""
    return out.with_name(out.stem + "_variant_classifier.safetensors")


def _classifier(args: argparse.Namespace, out: Path, shape: tuple, spacing: tuple, normalisation: Any,
                device: Any) -> Any:
    import numpy as np

    from CircleOfWillisGANLib.named_directions import MIN_CLASSIFIER_ACCURACY
    from CircleOfWillisGANLib.variant_classifier import (MIN_HELD_OUT_PER_CLASS, evaluate_classifier, fit_classifier,
                                                         labelled_set_folder, load_classifier_for,
                                                         load_labelled_folder, measurable)

    if args.classifier:
        return load_classifier_for(args.classifier, shape, spacing)
    if args.classifier_epochs < 1:
        raise InputError(f"--classifier-epochs {args.classifier_epochs} must be at least 1 (default 20)")
    folders = list(dict.fromkeys(labelled_set_folder(folder) for folder in args.labelled))
    if len(folders) < len(args.labelled):
        raise InputError("--labelled names one folder twice: its cases would be both trained on and held out; "
                         "give each folder once")
    sets = [load_labelled_folder(folder, shape, spacing, normalisation) for folder in folders]
    volumes = np.concatenate([s.volumes for s in sets])
    if len(volumes) < MIN_LABELLED:
        raise InputError(f"{len(volumes)} labelled cases are too few: {HELD_OUT:.0%} are held out to measure the "
                         f"classifier, so at least {MIN_LABELLED} are needed (hundreds for a useful one)")
    targets = [t for s in sets for t in s.targets]
    order = np.random.default_rng(0).permutation(len(volumes))
    cut = max(1, int(round(len(volumes) * (1 - HELD_OUT))))
    fit, held = order[:cut], order[cut:]
    held_targets = [targets[i] for i in held]
    if not any(measurable(held_targets, key) for key in held_targets[0]):  # refused before minutes of training
        raise InputError(f"the {len(held)} held-out cases ({HELD_OUT:.0%} of {len(volumes)}) show no variant present "
                         f"{MIN_HELD_OUT_PER_CLASS} times and absent {MIN_HELD_OUT_PER_CLASS} times, so no call of the "
                         "classifier could be measured: label more cases (hundreds), with and without each variant")
    with tqdm(total=args.classifier_epochs, desc="training variant classifier", unit="epoch", disable=None) as bar:
        classifier = fit_classifier(volumes[fit], [targets[i] for i in fit], epochs=args.classifier_epochs,
                                    device=device, progress=lambda i, n: bar.update(i - bar.n))
    held_out = evaluate_classifier(classifier, volumes[held], held_targets)
    if not any(v is not None and v >= MIN_CLASSIFIER_ACCURACY for v in held_out.values()):
        raise InputError("the classifier calls no variant reliably on its held-out cases ("
                         + ", ".join(f"{k} {'unmeasured' if v is None else f'{v:.2f}'}" for k, v in held_out.items())
                         + f"; need {MIN_CLASSIFIER_ACCURACY}): label more cases or train it longer (--classifier-epochs)")
    classifier.info["held_out_cases"] = len(held)
    classifier.info["spacing_mm"] = [round(float(v), 6) for v in spacing]
    classifier.info["held_out_balanced_accuracy"] = held_out
    path = classifier.save(_classifier_path(out))
    print(f"variant classifier (trained on {len(fit)} cases) written to {path}; balanced accuracy on {len(held)} "
          "held-out cases: " + ", ".join(f"{k} {'unmeasured' if v is None else f'{v:.2f}'}" for k, v in held_out.items()))
    return classifier
