"""Projection quality on held-out phantoms: correlation and vessel Dice of the reconstruction, over >= 20 cases.

    nice -n 19 .venv/bin/python benchmarks/projection_quality.py --model MODEL.safetensors --n 20 --out reports/projection
Phantoms come from a set seed the model was not trained on (default 9001) on the model's grid, and go through
`cowgan project`'s preprocessing (reorient, resample at the model's spacing, min-max). Writes one JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CircleOfWillisGANLib.files import write_json  # noqa: E402
from CircleOfWillisGANLib.generator import load_generator  # noqa: E402
from CircleOfWillisGANLib.phantoms import PhantomConfig, generate_phantom  # noqa: E402
from CircleOfWillisGANLib.preprocess import scan_on_model_grid  # noqa: E402
from CircleOfWillisGANLib.projection import ProjectionConfig, project  # noqa: E402
from CircleOfWillisGANLib.volume_io import save_volume, spacing_of  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--set-seed", type=int, default=9001, help="phantom set seed, held out from training")
    parser.add_argument("--steps", type=int, nargs=3, default=None, metavar=("W", "WPLUS", "NOISE"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="reports/projection")
    args = parser.parse_args(argv)
    gen = load_generator(args.model, device=args.device)
    config = ProjectionConfig()
    if args.steps:
        config = dataclasses.replace(config, w_steps=args.steps[0], wplus_steps=args.steps[1], noise_steps=args.steps[2])
    phantom_config = PhantomConfig(shape=tuple(gen.arch.output_shape), spacing_mm=spacing_of(gen.affine))
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            phantom = generate_phantom((args.set_seed, i), phantom_config)
            scan = save_volume(Path(tmp) / f"case{i}.nii.gz", phantom.image, phantom.affine)
            target, _ = scan_on_model_grid(scan, gen.arch.output_shape, spacing_of(gen.affine))
            start = time.perf_counter()
            result = project(gen, target, config)
            cases.append(dict(case=i, seconds=round(time.perf_counter() - start, 2), **result.metrics))
            print(f"case {i}: correlation {result.metrics['correlation']:.4f}, vessel Dice {result.metrics['vessel_dice']:.4f}")
    summary = {key: {"mean": statistics.mean(c[key] for c in cases), "median": statistics.median(c[key] for c in cases),
                     "min": min(c[key] for c in cases)} for key in ("correlation", "vessel_dice", "mae")}
    report = {"model": gen.source, "model_content_sha256": gen.checkpoint.sha256, "cases": len(cases),
              "set_seed": args.set_seed, "config": dataclasses.asdict(config), "device": str(gen.device),
              "summary": summary, "per_case": cases}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = write_json(Path(args.out) / "projection_quality.json", report)
    print(f"{len(cases)} held-out phantoms: correlation mean {summary['correlation']['mean']:.4f} (min "
          f"{summary['correlation']['min']:.4f}), vessel Dice mean {summary['vessel_dice']['mean']:.4f} (min "
          f"{summary['vessel_dice']['min']:.4f}); report {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
