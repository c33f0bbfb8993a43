"""The standalone explorer end to end, under a virtual X screen: it shows vessels and changes with a slider."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

DRIVER = r"""
import sys, time
from PIL import Image
from CircleOfWillisGANLib.explorer.window import build_window
from CircleOfWillisGANLib.qt_pyside6 import qapplication
from CircleOfWillisGANLib.generator import build_generator
from CircleOfWillisGANLib.panel_engine import PanelEngine

app = qapplication()
window = build_window(engine=PanelEngine(build_generator("tiny", seed=0, device="cpu")))
window.resize(1200, 800)
window.show()
assert window.controller.wait_idle(60, app)
Image.fromarray(window.screenshot()).save(sys.argv[1])
window.ui.truncationSlider.setValue(160)
window.ui.truncationSlider.sliderReleased.emit()
assert window.controller.wait_idle(60, app)
Image.fromarray(window.screenshot()).save(sys.argv[2])
print(window.ui.statusLabel.text())
window.close()
"""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    if not shutil.which("xvfb-run"):
        pytest.skip("needs xvfb-run (apt-get install xvfb) to render the explorer headless")
    out = tmp_path_factory.mktemp("explorer")
    first, second = out / "first.png", out / "second.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-c", DRIVER,
                             str(first), str(second)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    if "could not load the qt platform plugin" in result.stderr.lower():
        pytest.skip("Qt's xcb plugin lacks system libraries (apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1)")
    assert result.returncode == 0, result.stderr[-2000:]
    from PIL import Image

    return np.asarray(Image.open(first).convert("RGB")), np.asarray(Image.open(second).convert("RGB")), result.stdout


def test_the_explorer_shows_the_panel_the_mip_and_a_red_vessel_surface(screenshots):
    first, _, status = screenshots
    height, width, _ = first.shape
    view = first[:, width // 2:]
    red = (view[..., 0] > 150) & (view[..., 1] < 120) & (view[..., 2] < 120)
    assert red.sum() > 500, "the vessel surface is missing"
    bright_grey = (view.min(axis=2) > 120) & (np.ptp(view, axis=2) < 20)
    assert bright_grey.sum() > 200, "the MIP and slices show no bright vessels"
    assert "generated in" in status


def test_moving_the_truncation_slider_changes_what_the_explorer_shows(screenshots):
    first, second, _ = screenshots
    changed = np.abs(first.astype(int) - second.astype(int)).max(axis=2) > 30
    assert changed.sum() > 1000


def test_without_a_display_the_explorer_says_so_in_one_line(monkeypatch, capsys):
    from PySide6.QtWidgets import QApplication

    from cowgan.main import main

    monkeypatch.setattr(QApplication, "instance", staticmethod(lambda: None))
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["explore", "--model", "demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no display" in err[0] and "xvfb-run -a cowgan explore --screenshot" in err[0]


def test_a_screenshot_never_replaces_a_file_and_must_be_a_png(tmp_path, capsys):
    from cowgan.main import main

    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    assert main(["explore", "--screenshot", str(mine)]) == 2
    assert "already exists: choose a new file name" in capsys.readouterr().err and mine.read_bytes() == b"the user's picture"
    assert main(["explore", "--screenshot", str(tmp_path / "shot.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["model", "projection"])
def test_a_screenshot_of_a_model_or_projection_that_fails_is_an_error_not_a_picture(tmp_path, failure):
    from CircleOfWillisGANLib.volume_io import default_affine, save_volume
    from cowgan.main import main

    if not shutil.which("xvfb-run"):
        pytest.skip("needs xvfb-run (apt-get install xvfb) to render the explorer headless")
    if failure == "model":
        (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
        options, named = ["--model", str(tmp_path / "garbage.pt")], "garbage.pt"
    else:  # a projection made with the demo model, shown with another model
        scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((16, 64, 64)) * 300,
                           default_affine((16, 64, 64), (1.24, 1.24, 1.24)))
        assert main(["project", "--volume", str(scan), "--out", str(tmp_path / "proj"), "--steps", "1", "1", "1"]) == 0
        options = ["--model", str(REPO / "Testing" / "data" / "claim-golden" / "model_0.pt"),
                   "--projection", str(tmp_path / "proj")]
        named = "demo.safetensors), or project the volume again with this model"
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-m", "cowgan", "explore",
                             *options, "--screenshot", str(shot)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    if "could not load the qt platform plugin" in result.stderr.lower():
        pytest.skip("Qt's xcb plugin lacks system libraries (apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1)")
    errors = [line for line in result.stderr.splitlines() if line.startswith("cowgan: error:")]
    assert result.returncode == 2 and len(errors) == 1 and named in errors[0] and not shot.exists()


def _scene_showing(shape_dhw, affine):
    """A VolumeScene (never rendered) after one update, in a window of the explorer's proportions."""
    vtk = pytest.importorskip("vtk")
    from CircleOfWillisGANLib.explorer.view import VolumeScene

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(1200, 800)
    scene = VolumeScene(window)
    scene.update(np.random.default_rng(0).random(shape_dhw).astype(np.float32), affine)
    return scene


def _display_xy(renderer, point):
    import vtk

    coordinate = vtk.vtkCoordinate()
    coordinate.SetCoordinateSystemToWorld()
    coordinate.SetValue(*point)
    return np.asarray(coordinate.GetComputedDoubleDisplayValue(renderer))


RAS_GRID = np.diag([1.24, 1.24, 1.24, 1.0]) + np.array([[0, 0, 0, -39], [0, 0, 0, -39], [0, 0, 0, -9], [0, 0, 0, 0]])
LPS_GRID = np.diag([-1.24, -1.24, 1.24, 1.0]) + np.array([[0, 0, 0, 39], [0, 0, 0, 39], [0, 0, 0, -9], [0, 0, 0, 0]])


@pytest.mark.parametrize("affine", [RAS_GRID, LPS_GRID], ids=["RAS", "LPS"])
def test_every_view_shows_the_patients_right_on_the_left_and_the_sagittal_anterior_on_the_left(affine):
    scene = _scene_showing((16, 64, 64), affine)
    centre = affine[:3, :3] @ np.array([31.5, 31.5, 7.5]) + affine[:3, 3]
    right, anterior, superior = centre + [10, 0, 0], centre + [0, 10, 0], centre + [0, 0, 10]
    axial, coronal, sagittal = scene.slice_renderers
    for renderer in (scene.mip_renderer, scene.surface_renderer, axial, coronal):
        assert _display_xy(renderer, right)[0] < _display_xy(renderer, centre)[0]
    assert _display_xy(axial, anterior)[1] > _display_xy(axial, centre)[1]
    assert _display_xy(sagittal, anterior)[0] < _display_xy(sagittal, centre)[0]
    for renderer in (coronal, sagittal):
        assert _display_xy(renderer, superior)[1] > _display_xy(renderer, centre)[1]
    letters = {name: {edge: text.GetInput() for edge, text in scene.letters[renderer].items()}
               for name, renderer in (("axial", axial), ("coronal", coronal), ("sagittal", sagittal),
                                      ("3d", scene.mip_renderer))}
    assert letters == {"axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
                       "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
                       "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
                       "3d": {"left": "R", "right": "L", "top": "A", "bottom": "P"}}


def test_the_orientation_letters_follow_the_camera_when_the_user_turns_the_view():
    scene = _scene_showing((16, 64, 64), RAS_GRID)
    scene.mip_renderer.GetActiveCamera().Azimuth(180)
    assert scene.letters[scene.mip_renderer]["left"].GetInput() == "L"


@pytest.mark.parametrize("shape_dhw", [(16, 64, 64), (64, 128, 128), (128, 64, 64)])
def test_each_view_shows_the_whole_volume_and_fills_most_of_its_viewport(shape_dhw):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    scene = _scene_showing(shape_dhw, affine)
    d, h, w = shape_dhw
    corners = [affine[:3, :3] @ np.array([i, j, k]) for i in (0, h - 1) for j in (0, w - 1) for k in (0, d - 1)]
    width, height = scene.render_window.GetSize()
    for renderer in [scene.mip_renderer, scene.surface_renderer] + scene.slice_renderers:
        x0, y0, x1, y1 = np.asarray(renderer.GetViewport()) * [width, height, width, height]
        xy = np.array([_display_xy(renderer, corner)[:2] for corner in corners])
        assert (xy >= [x0, y0]).all() and (xy <= [x1, y1]).all(), "the volume reaches beyond its viewport"
        spans = np.ptp(xy, axis=0) / [x1 - x0, y1 - y0]
        assert spans.max() > 0.75, "the volume is shown smaller than its viewport allows"


def test_a_start_seed_beyond_the_panels_seed_box_is_refused_in_one_line_before_a_window_opens(capsys, monkeypatch):
    from CircleOfWillisGANLib.explorer import window
    from cowgan.main import main

    def no_window(**kwargs):
        raise AssertionError("a window was about to open")

    monkeypatch.setattr(window, "build_window", no_window)
    assert main(["explore", "--seed", str(2**31)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed 2147483648" in err[0] and "from 0 to 2147483647" in err[0]


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT (Ctrl-C), SIGTERM
def test_ctrl_c_or_sigterm_closes_the_windows_as_the_user_would_and_ends_the_loop(monkeypatch, signum):
    import signal

    pytest.importorskip("PySide6")
    monkeypatch.setenv("QT_QPA_PLATFORM", os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QWidget

    from CircleOfWillisGANLib.qt_pyside6 import qapplication, run_event_loop

    closed = []

    class Window(QWidget):
        def closeEvent(self, event):
            closed.append(True)
            super().closeEvent(event)

    app = qapplication("test")
    window = Window()
    window.show()
    before = signal.getsignal(signum)
    QTimer.singleShot(300, lambda: os.kill(os.getpid(), signum))  # a signal, as from the terminal, while Qt waits
    QTimer.singleShot(10_000, app.quit)  # the loop ends anyway if the signal were ignored
    assert run_event_loop(app) == 128 + signum
    assert closed == [True] and signal.getsignal(signum) is before
