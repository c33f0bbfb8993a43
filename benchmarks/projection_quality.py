"""Projection quality on held-out phantoms: correlation and vessel Dice of the reconstruction, over >= 20 cases.

    nice -n 19 .venv/bin/python benchmarks/projection_quality.py --model MODEL.safetensors --n 20 --out reports/projection
Phantoms come from a set seed the model was not trained on (default 9001) on the model's grid, and go through
`cowgan project`'s preprocessing (reorient, resample at the model's spacing, min-max). With --classifier (the one
`cowgan name-directions` wrote) it also reports how often the reconstruction keeps each phantom's variants, and
how the model's named sliders act around the patients' own anatomy: each projection moved --amount standard
deviations towards the opposite call, as benchmarks/named_directions.py does around seeds. Phantoms whose grid cuts
part of their circle off (`circle_in_view` false) count for correlation and Dice but not for the variant calls: their
recorded variants are not what the image shows (`cowgan name-directions` does not train on those records either).
Writes one JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CircleOfWillisGANLib.directions import directions_for  # noqa: E402
from CircleOfWillisGANLib.errors import InputError, script_exit_code  # noqa: E402
from CircleOfWillisGANLib.files import write_json  # noqa: E402
from CircleOfWillisGANLib.generator import load_generator  # noqa: E402
from CircleOfWillisGANLib.named_directions import measure_edits_around, named  # noqa: E402
from CircleOfWillisGANLib.phantoms import PhantomConfig, generate_phantom  # noqa: E402
from CircleOfWillisGANLib.preprocess import scan_on_model_grid  # noqa: E402
from CircleOfWillisGANLib.projection import ProjectionConfig, project  # noqa: E402
from CircleOfWillisGANLib.variant_classifier import load_classifier_for, targets_from_phantom  # noqa: E402
from CircleOfWillisGANLib.volume_io import save_volume, spacing_of  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--set-seed", type=int, default=9001, help="phantom set seed, held out from training")
    parser.add_argument("--steps", type=int, nargs=3, default=None, metavar=("W", "WPLUS", "NOISE"))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a ProjectionConfig setting, e.g. --set noise_prior_weight=0.1 (repeatable)")
    parser.add_argument("--classifier", help="variant classifier: also measure variant calls and named sliders")
    parser.add_argument("--amount", type=float, default=3.0, help="named slider move in standard deviations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="reports/projection")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise InputError(f"--n {args.n}: use 1 or more held-out phantoms (20 or more for a mean worth reporting)")
    gen = load_generator(args.model, device=args.device)
    classifier = (load_classifier_for(args.classifier, gen.arch.output_shape, spacing_of(gen.affine))
                  if args.classifier else None)
    config = ProjectionConfig()
    if args.steps:
        config = dataclasses.replace(config, w_steps=args.steps[0], wplus_steps=args.steps[1], noise_steps=args.steps[2])
    config = _with_settings(config, args.set)
    phantom_config = PhantomConfig(shape=tuple(gen.arch.output_shape), spacing_mm=spacing_of(gen.affine))
    cases, results, truths = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            phantom = generate_phantom((args.set_seed, i), phantom_config)
            scan = save_volume(Path(tmp) / f"case{i}.nii.gz", phantom.image, phantom.affine)
            target = scan_on_model_grid(scan, gen.arch.output_shape, spacing_of(gen.affine),
                                        normalisation=gen.normalisation).volume
            start = time.perf_counter()
            result = project(gen, target, config)
            results.append(result)
            truths.append(variant_truth(phantom))
            cases.append(dict(case=i, seconds=round(time.perf_counter() - start, 2), **result.metrics))
            m = result.metrics
            print(f"case {i}: correlation {m['correlation']:.4f}, vessel Dice {m['vessel_dice']:.4f}"
                  + (f" ({m['vessel_dice_with_start_noise']:.4f} with the starting noise), largest block distance "
                     f"{m['w_distance_max']:.2f} (samples' {m['w_distance_max_of_samples']:.2f})"
                     if "w_distance_max" in m else ""))
    summary = {key: {"mean": statistics.mean(c[key] for c in cases), "median": statistics.median(c[key] for c in cases),
                     "min": min(c[key] for c in cases), "max": max(c[key] for c in cases)}
               for key in ("correlation", "vessel_dice", "mae", "vessel_dice_with_start_noise", "w_distance_max")
               if all(key in c for c in cases)}
    report = {"model": gen.source, "model_content_sha256": gen.checkpoint.sha256, "cases": len(cases),
              "set_seed": args.set_seed, "config": dataclasses.asdict(config), "device": str(gen.device),
              "summary": summary, "per_case": cases}
    if classifier is not None:
        report["variants"] = _variant_report(gen, classifier, results, truths, args.amount)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = write_json(Path(args.out) / "projection_quality.json", report)
    print(f"{len(cases)} held-out phantoms: correlation mean {summary['correlation']['mean']:.4f} (min "
          f"{summary['correlation']['min']:.4f}), vessel Dice mean {summary['vessel_dice']['mean']:.4f} (min "
          f"{summary['vessel_dice']['min']:.4f}); report {path}")
    return 0


def _with_settings(config: ProjectionConfig, settings: List[str]) -> ProjectionConfig:
    """`config` with FIELD=VALUE settings applied (values parsed as the field's type)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: Dict[str, Any] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in fields or not value:
            raise InputError(f"--set {setting}: use FIELD=VALUE with one of {', '.join(fields)}")
        kind = type(getattr(config, name))
        try:
            changes[name] = kind(value)
        except ValueError:
            raise InputError(f"--set {setting}: {name} takes a {kind.__name__}") from None
    return dataclasses.replace(config, **changes)


def variant_truth(phantom: Any) -> Optional[Dict[str, int]]:
    """A phantom's recorded variant targets, None where its grid cuts part of the circle off (the image does not show
    what the record says), as `load_labelled_folder` leaves such records out."""
    if phantom.params["circle_in_view"] is False:
        return None
    return targets_from_phantom(phantom.variants.as_dict())


def _variant_report(gen: Any, classifier: Any, results: List[Any], truths: List[Optional[Dict[str, int]]],
                    amount: float) -> Dict[str, Any]:
    """Per variant: how often the classifier's call of the reconstruction matches the phantom's truth and the call of
    the target itself, over the phantoms that show their whole circle; then each named slider's flips and kept calls
    around all the projections."""
    shown = [i for i, t in enumerate(truths) if t is not None]
    cut = [i for i, t in enumerate(truths) if t is None]
    if cut:
        print(f"{len(cut)} of {len(truths)} phantoms do not show their whole circle (cases {', '.join(map(str, cut))}): "
              "left out of the variant calls")
    calls = _call_agreement(classifier, [results[i] for i in shown], [truths[i] for i in shown]) if shown else {}
    sliders = []
    directions = named(directions_for(gen))
    if not directions:
        print(f"{gen.source} has no named directions (`cowgan name-directions` adds them): no slider report")
    else:
        ws = torch.stack([r.ws for r in results])
        noise = torch.cat([r.noise for r in results])
        for r in measure_edits_around(gen, classifier, directions, ws, noise, amount):
            pooled = "n/a" if r.others_kept is None else f"{r.others_kept:.0%}"
            print(f"{r.label} around the projections: flipped in {r.flipped:.0%} of {r.samples}, other reliably called "
                  f"variants kept in {pooled}")
            sliders.append(dataclasses.asdict(r))
    return {"classifier": classifier.info.get("held_out_balanced_accuracy"), "calls": calls,
            "cases_left_out_of_calls": cut, "amount_sd": amount,
            "named_sliders_around_projections": sliders}


def _call_agreement(classifier: Any, results: List[Any], truths: List[Dict[str, int]]) -> Dict[str, Dict[str, float]]:
    """Per variant: its prevalence and how often the calls of the targets and reconstructions match the truth and
    each other."""
    keys = list(classifier.keys)
    truth = np.array([[t[k] for k in keys] for t in truths])
    on_target = classifier.predict(np.stack([r.target for r in results]))
    on_reconstruction = classifier.predict(np.stack([r.reconstruction for r in results]))
    calls = {k: {"present_in_phantoms": float(truth[:, i].mean()),
                 "target_call_matches_truth": float((on_target[:, i] == truth[:, i]).mean()),
                 "reconstruction_call_matches_truth": float((on_reconstruction[:, i] == truth[:, i]).mean()),
                 "reconstruction_call_matches_target_call": float((on_reconstruction[:, i] == on_target[:, i]).mean())}
             for i, k in enumerate(keys)}
    for k, c in calls.items():
        print(f"{k}: reconstruction's call matches the phantom in {c['reconstruction_call_matches_truth']:.0%} "
              f"(the target's own call in {c['target_call_matches_truth']:.0%})")
    return calls


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "projection_quality.py"))
