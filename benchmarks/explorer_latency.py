"""Explorer latency: time from a slider release to the new 3D MIP and vessel surface drawn on screen.

Run under a display (e.g. `xvfb-run -a python benchmarks/explorer_latency.py`). Uses the bundled demo model
(16 x 64 x 64), another model with --model, or random weights of a training preset with --preset (`--preset demo`:
the demo architecture at the full 32 x 128 x 128, the explorer's worst case).
`--host-holds-gil` idles the GUI thread in C code that keeps Python's GIL, as 3D Slicer's PythonQt does, and
gives the controller the setting the Slicer module gives it (`--without-lending`: without it, for comparison).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--preset", default=None, help="random weights of this preset instead of --model")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--host-holds-gil", action="store_true", help="idle as 3D Slicer does, holding the GIL")
    parser.add_argument("--without-lending", action="store_true",
                        help="with --host-holds-gil: the controller does not release the GIL for the worker")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 0:
        parser.error(f"--repeats must be at least 1 (got {args.repeats}) and --threads 0 (torch's default) or a "
                     f"positive count (got {args.threads})")
    if args.threads:
        torch.set_num_threads(args.threads)

    from CircleOfWillisGANLib.explorer.window import build_window
    from CircleOfWillisGANLib.qt_pyside6 import qapplication
    from CircleOfWillisGANLib.generator import build_generator, load_generator
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    if args.preset:
        generator, what = build_generator(args.preset, seed=0, device="cpu"), f"{args.preset} preset, random weights"
    else:
        generator, what = load_generator(args.model, device="cpu"), args.model
    app = qapplication()
    window = build_window(engine=PanelEngine(generator))
    window.show()
    controller = window.controller
    controller.wait_idle(60, app)
    shown = []
    controller.views.append(lambda result: shown.append(time.perf_counter()))
    controller.host_holds_gil = args.host_holds_gil and not args.without_lending
    usleep = ctypes.PyDLL(None).usleep  # a PyDLL call keeps the GIL, like the C++ event loop of PythonQt's host
    idle = (lambda: usleep(1000)) if args.host_holds_gil else (lambda: time.sleep(0.001))

    def release(slider, value) -> float:
        count = len(shown)
        start = time.perf_counter()
        slider.setValue(value)
        slider.sliderReleased.emit()
        while len(shown) == count or not controller.worker.idle:
            app.processEvents()
            idle()
        return shown[-1] - start

    psi = window.ui.truncationSlider
    for value in (60, 80):  # warm-up: first VTK render, caches
        release(psi, value)
    single = [release(psi, 50 + 5 * (i % 10)) for i in range(args.repeats)]
    direction = controller.direction_sliders[0]
    directions = [release(direction, (-1) ** i * (5 + i)) for i in range(args.repeats)]
    drag = []
    for i in range(args.repeats):  # a drag: a value in flight when the release comes
        psi.setValue(40 + i)
        app.processEvents()
        time.sleep(0.05)
        drag.append(release(psi, 90 - i))
    result = controller.last_result
    host = "PySide6" if not args.host_holds_gil else (
        "emulated PythonQt holding the GIL" + (", no lending" if args.without_lending else ", lending it each poll"))
    print(f"model: {what}; volume {tuple(result.volume.shape)}; torch threads {torch.get_num_threads()}; host {host}")
    print(f"generate {result.generate_s * 1000:.0f} ms, surface {result.surface_s * 1000:.0f} ms (last frame)")
    for name, values in (("psi slider release", single), ("direction slider release", directions),
                         ("release during a drag", drag)):
        print(f"{name:>26}: median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms "
              f"(to new MIP + surface on screen, n={len(values)})")
    window.close()
    return 0


if __name__ == "__main__":
    from CircleOfWillisGANLib.errors import script_exit_code

    sys.exit(script_exit_code(main, "explorer_latency.py"))
