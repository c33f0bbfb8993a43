"""Phantom generation speed: phantoms per second in memory and written to disk, for 1 and 2 workers.

    nice -n 19 .venv/bin/python benchmarks/phantom_speed.py --n 40
The target is >= 5 phantoms/s at 32 x 128 x 128 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CircleOfWillisGANLib.errors import script_exit_code  # noqa: E402
from CircleOfWillisGANLib.phantoms import PhantomConfig, generate_phantom  # noqa: E402
from CircleOfWillisGANLib.phantoms.writer import write_phantom_set  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if args.n < 1 or min(args.workers) < 1:
        parser.error(f"--n {args.n} and every --workers {' '.join(map(str, args.workers))} must be at least 1")
    config = PhantomConfig()
    generate_phantom((0, 0), config)
    start = time.perf_counter()
    for i in range(args.n):
        generate_phantom((1, i), config)
    elapsed = time.perf_counter() - start
    print("| what | workers | phantoms/s | ms/phantom |\n|---|---|---|---|")
    print(f"| generate_phantom in memory | 1 | {args.n / elapsed:.1f} | {1000 * elapsed / args.n:.0f} |")
    for compress in (True, False):
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                write_phantom_set(tmp, args.n, seed=1, config=config, workers=workers, compress=compress)
                elapsed = time.perf_counter() - start
            what = "write_phantom_set .nii.gz" if compress else "write_phantom_set .nii"
            print(f"| {what} | {workers} | {args.n / elapsed:.1f} | {1000 * elapsed / args.n:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "phantom_speed.py"))
