"""`cowgan turing create | rate | status | report`: visual Turing test sessions from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.turing.config import DISPLAYS, parse_rater_ids

MODEL_ONLY = ("seeds", "psi", "device")  # `create` options that only apply when the generated cases come from --model


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("turing", help="visual Turing tests: create a blinded session, rate it, report results",
                              description="Blinded, randomised reader studies of real versus generated volumes.")
    sub = p.add_subparsers(dest="turing_command", metavar="ACTION")
    sub.required = True

    c = sub.add_parser("create", help="draw a session folder (neutral cases) and its answer key")
    c.add_argument("--real", required=True, help="folder of real .nii/.nii.gz volumes (label maps and masks skipped)")
    c.add_argument("--generated", help="folder of generated volumes (or use --model)")
    c.add_argument("--model", help="'demo', a .safetensors model or a reference model_N.pt to generate from")
    c.add_argument("--seeds", default=None, help="seeds to draw generated cases from, like 1-100 (default 1..CASES)")
    c.add_argument("--psi", type=float, default=None, help="truncation psi for --model (default 1 = none)")
    c.add_argument("--out", required=True, help="new session folder to share with the raters")
    c.add_argument("--cases", type=int, default=60, help="cases per rater (default 60)")
    c.add_argument("--real-fraction", default="0.5", help="share of real cases (default 0.5) or 'randomised' (40-60%%)")
    c.add_argument("--display", choices=DISPLAYS, default="all", help="what raters see (default all)")
    c.add_argument("--time-limit", type=float, default=None, help="seconds per case before it is hidden (default or 0: none)")
    c.add_argument("--allow-back", action="store_true", help="let raters go back and revise answers")
    c.add_argument("--seed", type=int, default=0, help="random seed: the same seed and inputs draw the same session")
    c.add_argument("--raters", default=None, help="comma-separated rater ids allowed to open the session (default any)")
    c.add_argument("--key", default=None, help="where to write the answer key (default SESSION/answer_key.json); "
                                               "keep it outside the shared folder for strict blinding")
    c.add_argument("--device", default=None, help="cpu, cuda or auto (for --model; default auto)")
    c.set_defaults(run=run_create)

    r = sub.add_parser("rate", help="rate a session in a window (PySide6): one case at a time, resumable")
    r.add_argument("session", help="the session folder")
    r.add_argument("--rater", required=True, help="your rater id")
    r.set_defaults(run=run_rate)

    s = sub.add_parser("status", help="how many cases each rater has answered (reads no answer key)")
    s.add_argument("session", help="the session folder")
    s.set_defaults(run=run_status)

    t = sub.add_parser("report", help="statistics, CSV and HTML report from the journals and the answer key")
    t.add_argument("session", help="the session folder")
    t.add_argument("--key", default=None, help="answer key (default SESSION/answer_key.json)")
    t.add_argument("--out", default=None, help="report folder (default SESSION-report beside the session)")
    t.add_argument("--overwrite", action="store_true", help="replace a report already in the report folder")
    t.set_defaults(run=run_report)


def run_create(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from CircleOfWillisGANLib.latents import parse_seeds
    from CircleOfWillisGANLib.turing import TuringSession

    if (args.generated is None) == (args.model is None):
        raise InputError("pass exactly one of --generated DIR or --model MODEL")
    given = [f"--{name}" for name in MODEL_ONLY if getattr(args, name) is not None]  # None: the user left it out
    if args.generated is not None and given:
        names = " and ".join([", ".join(given[:-1]), given[-1]] if len(given) > 1 else given)
        raise InputError(f"{names} only appl{'y' if len(given) > 1 else 'ies'} with --model: drop "
                         f"{'them' if len(given) > 1 else 'it'}, or pass --model instead of --generated")
    raters = _rater_ids(args.raters)
    with tqdm(total=args.cases, desc="writing cases", unit="case", disable=None) as bar:
        created = TuringSession.create(
            args.out, real=args.real, generated=args.generated, model=args.model,
            seeds=parse_seeds(args.seeds) if args.seeds else None, psi=1.0 if args.psi is None else args.psi,
            n_cases=args.cases, real_fraction=args.real_fraction, display=args.display, time_limit=args.time_limit,
            allow_back=args.allow_back, seed=args.seed, raters=raters, key_path=args.key, device=args.device or "auto",
            progress=lambda done, total: bar.update(done - bar.n))
    print(f"created {created.n_cases} cases in {created.folder} ({created.n_real} real, {created.n_fake} generated); "
          f"answer key: {created.key_path}")
    if created.key_path.parent.resolve() == created.folder.resolve():
        print("note: the answer key is inside the session folder; move it (and pass --key to `report`) "
              "before sharing the folder if raters can browse files")
    return 0


def _rater_ids(text: Optional[str]) -> List[str]:
    """The rater ids in --raters; one given empty or naming no id is refused, as it would silently open the session
    to any id (a script's empty variable, say)."""
    return [] if text is None else parse_rater_ids(text, blank_means_any=False)


def run_rate(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.errors import require
    from CircleOfWillisGANLib.turing.rater import admitted_session

    admitted_session(args.session, args.rater)  # a wrong folder or id stops before any window opens
    require("PySide6", "The rater window", "PySide6-Essentials")
    from CircleOfWillisGANLib.turing.rater_app import run_rater_app

    return run_rater_app(args.session, args.rater)


def run_status(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.turing.status import session_status

    for line in session_status(args.session):
        print(line)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.turing import report
    from CircleOfWillisGANLib.turing.report import summary_text

    result, paths = report(args.session, key=args.key, out=args.out, overwrite=args.overwrite)
    print(summary_text(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stdout)
    return 0
