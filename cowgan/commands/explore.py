"""`cowgan explore`: the Slicer panel in a standalone window with a 3D MIP, the vessel surface and slices."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, List

from CircleOfWillisGANLib.errors import CoWGANError, InputError, OutputError
from CircleOfWillisGANLib.files import path_problem
from CircleOfWillisGANLib.latents import check_seed


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("explore", help="open the interactive explorer (PySide6 + VTK window)",
                              description="Move sliders and see each generated volume as a 3D MIP, a vessel surface "
                                          "and slices; the same panel as the 3D Slicer module. Its Visual Turing test menu opens "
                                          "the rater and organiser panels.")
    p.add_argument("--model", default="demo", help="'demo', a native .safetensors model, or a reference model_N.pt")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=None, help="seed shown first")
    p.add_argument("--psi", type=float, default=None, help="truncation psi shown first (0 to 2)")
    p.add_argument("--projection", metavar="FILE", help="show this projection.safetensors (written by `cowgan project` "
                   "with the same model) first: the sliders then move around the patient's anatomy")
    p.add_argument("--turing", metavar="SESSION", help="open only the visual Turing test's rater window on this session "
                   "folder (the explorer stays closed: a rater must not generate with the model under test)")
    p.add_argument("--rater", metavar="ID", help="with --turing: your rater id; the session starts (or resumes) at once")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window once the first volume is shown, then exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from CircleOfWillisGANLib.explorer.window import build_window
    from CircleOfWillisGANLib.panel_engine import MAX_UI_SEED
    from CircleOfWillisGANLib.qt_pyside6 import qapplication, run_event_loop
    from CircleOfWillisGANLib.precision import resolve_device

    if args.seed is not None:
        check_seed(args.seed)
        if args.seed > MAX_UI_SEED:  # said here: the panel's spin box cannot hold it, and the window would stay blank
            raise InputError(f"--seed {args.seed} is beyond what the panel's seed box holds: use a seed from 0 to "
                             f"{MAX_UI_SEED} (`cowgan generate` takes seeds up to 2^32-1)")
    if args.psi is not None and not 0.0 <= args.psi <= 2.0:
        raise InputError(f"--psi {args.psi} is out of range: use a value from 0 to 2")
    if args.rater and not args.turing:
        raise InputError("--rater needs --turing SESSION: name the session folder to rate")
    ignored = [flag for flag, given in (("--model", args.model != "demo"), ("--seed", args.seed is not None),
                                        ("--psi", args.psi is not None), ("--projection", bool(args.projection)),
                                        ("--screenshot", bool(args.screenshot)))
               if given]
    if args.turing and ignored:
        raise InputError(f"{', '.join(ignored)} would be ignored with --turing (the rater window shows the session's "
                         "cases only): leave them out")
    if args.turing:  # said here, as `cowgan turing rate` says it, not in a panel behind the window
        from CircleOfWillisGANLib.turing.layout import read_session
        from CircleOfWillisGANLib.turing.rater import admitted_session

        from CircleOfWillisGANLib.turing.rater_app import run_rater_app

        if args.rater:
            admitted_session(args.turing, args.rater)
        else:
            read_session(args.turing)
        return run_rater_app(args.turing, args.rater or "", start=bool(args.rater))
    problem = None if args.model == "demo" else path_problem(Path(args.model))
    if problem:  # the window loads the model quietly, so a wrong path is said here, before a blank window
        raise InputError(f"model {args.model} {problem}: pass 'demo' or the path of a .safetensors model or model_N.pt")
    if args.projection:  # read here: a projection that is not one is said before a window opens
        from CircleOfWillisGANLib.projection_io import load_projection

        load_projection(args.projection)
    if args.screenshot:
        _check_screenshot_path(Path(args.screenshot))
    app = qapplication("cowgan explore")
    device = resolve_device(args.device).type
    errors: List[str] = []  # with --screenshot no one is at the screen to close an error dialog
    window = build_window(model=args.model, device=device, then=lambda engine: _initial_values(window, args),
                          show_error=errors.append if args.screenshot else None)
    window.show()
    if not args.screenshot:
        return run_event_loop(app)
    deadline = time.perf_counter() + 300
    while window.controller.last_result is None and not window.controller.last_error and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)
    window.controller.wait_idle(60, app)
    error = errors[0] if errors else window.controller.last_error  # a failed load stays in the status line
    if not error:
        from CircleOfWillisGANLib.mip import save_png

        print(f"wrote {save_png(args.screenshot, window.screenshot())}")
    window.close()
    if error:  # the model or the projection failed: no picture of an empty view
        raise CoWGANError(error)
    return 0


def _check_screenshot_path(path: Path) -> None:
    """A new .png file in a folder that exists: the screenshot never replaces a file."""
    if path.suffix.lower() != ".png":
        raise InputError(f"--screenshot {path} must end in .png (the screenshot is a PNG picture)")
    if path.exists():
        raise OutputError(f"--screenshot {path} already exists: choose a new file name (a screenshot does not replace "
                          "files)")
    if not path.parent.resolve().is_dir():
        raise OutputError(f"--screenshot {path}: the folder {path.parent} does not exist: create it or choose another")


def _initial_values(window: Any, args: argparse.Namespace) -> None:
    ui = window.ui
    if args.seed is not None:
        ui.seedSpinBox.setValue(args.seed)
    if args.psi is not None:
        ui.truncationSlider.setValue(int(round(args.psi * 100)))
    if args.projection:
        window.controller.use_projection(str(Path(args.projection).resolve()))
