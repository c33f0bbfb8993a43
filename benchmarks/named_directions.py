"""Named sliders: how often moving each named direction flips its variant and keeps the others, by the classifier.

    nice -n 19 .venv/bin/python benchmarks/named_directions.py --model MODEL_named.safetensors \
        --classifier MODEL_named_variant_classifier.safetensors --n 100 --amount 3 --out reports/named
Samples are seeds the boundaries were not fitted on (default from 10000); each is moved by --amount standard
deviations towards the opposite call (the slider's end at 3). Writes one JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CircleOfWillisGANLib.directions import directions_for  # noqa: E402
from CircleOfWillisGANLib.errors import InputError, script_exit_code  # noqa: E402
from CircleOfWillisGANLib.files import write_json  # noqa: E402
from CircleOfWillisGANLib.generator import load_generator  # noqa: E402
from CircleOfWillisGANLib.named_directions import measure_edits, named  # noqa: E402
from CircleOfWillisGANLib.variant_classifier import load_classifier_for  # noqa: E402
from CircleOfWillisGANLib.volume_io import spacing_of  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a model written by `cowgan name-directions`")
    parser.add_argument("--classifier", required=True, help="the variant classifier written beside it")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--amount", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="reports/named")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n} must be at least 1 (the number of unseen seeds each slider is measured on)")
    gen = load_generator(args.model, device=args.device)
    directions = directions_for(gen)
    if not named(directions):
        raise InputError(f"{args.model} has no named directions: run `cowgan name-directions` first")
    classifier = load_classifier_for(args.classifier, gen.arch.output_shape, spacing_of(gen.affine))
    reports = measure_edits(gen, classifier, directions, args.n, args.amount, args.seed)
    for r in reports:
        pooled = "n/a" if r.others_kept is None else f"{r.others_kept:.0%}"
        counted = ", ".join(f"{k} {v:.0%}" for k, v in r.kept_by_variant.items() if k not in r.at_chance)
        uncounted = ", ".join(f"{k} {r.kept_by_variant[k]:.0%}" for k in r.at_chance)
        print(f"{r.label}: flipped in {r.flipped:.0%} of {r.samples} samples, other reliably called variants kept in "
              f"{pooled} ({counted})" + (f"; not counted, the classifier is at chance on: {uncounted}" if uncounted else ""))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = write_json(Path(args.out) / "named_directions.json", {
        "model": gen.source, "model_content_sha256": gen.checkpoint.sha256, "samples": args.n, "amount_sd": args.amount,
        "seed": args.seed, "directions": [dataclasses.asdict(r) for r in reports]})
    print(f"report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "named_directions.py"))
