"""The panel: the real .ui under PySide6 (offscreen), driven like a user, checked against the library."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest

pytest.importorskip("PySide6.QtUiTools")

from CircleOfWillisGANLib.errors import InputError, OutputError  # noqa: E402
from CircleOfWillisGANLib.generator import build_generator  # noqa: E402
from CircleOfWillisGANLib.panel_controller import PanelController  # noqa: E402
from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt  # noqa: E402
from CircleOfWillisGANLib.panel_engine import PanelEngine, PanelState  # noqa: E402
from CircleOfWillisGANLib.explorer.window import panel_ui_path  # noqa: E402


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def engine():
    gen = build_generator("tiny", seed=0, device="cpu")
    for block in gen.model.synthesis.blocks:  # random models start with zero noise strength: make noise matter
        block.noise1.weight.data.fill_(0.5)
        block.noise2.weight.data.fill_(0.5)
    return PanelEngine(gen)


@pytest.fixture
def panel(app, engine, tmp_path):
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    errors = []
    controller = PanelController(ui, pyside6_qt(), show_error=errors.append)
    controller.errors = errors
    ui.outputFolderLineEdit.setText(str(tmp_path))
    controller.set_engine(engine)
    assert controller.wait_idle(app=app)
    yield controller
    controller.close()
    root.deleteLater()


def settle(panel, app):
    assert panel.wait_idle(app=app)
    return panel.last_result


def test_a_loaded_model_shows_a_volume_its_mip_and_its_vessel_surface(panel, app):
    result = settle(panel, app)
    assert result.volume.shape == (16, 32, 32) and result.volume.dtype == np.float32
    assert 0.0 <= result.volume.min() and result.volume.max() <= 1.0
    assert result.mip.dtype == np.uint8 and result.mip.max() > 0
    assert result.surface.GetNumberOfPoints() > 0
    assert "generated in" in panel.ui.statusLabel.text()


def test_the_volume_is_what_the_library_generates_for_the_panel_values(panel, app, engine):
    panel.ui.seedSpinBox.setValue(42)
    panel.ui.truncationSlider.setValue(50)
    result = settle(panel, app)
    expected = engine.generator.generate(seeds=[42], psi=0.5)[0]
    np.testing.assert_allclose(result.volume, expected, atol=1e-6)


def test_moving_the_truncation_slider_changes_the_volume(panel, app):
    before = settle(panel, app).volume
    panel.ui.truncationSlider.setValue(150)
    after = settle(panel, app)
    assert after.state.psi == 1.5 and np.abs(after.volume - before).max() > 1e-3


def test_rapid_slider_moves_are_coalesced_and_the_newest_value_wins(panel, app):
    renders = panel.renders
    for value in range(10, 110, 5):
        panel.ui.truncationSlider.setValue(value)
    result = settle(panel, app)
    assert result.state.psi == 1.05
    assert panel.renders - renders <= 2


def test_generation_never_blocks_the_gui_thread(panel, app, engine, monkeypatch):
    slow = engine.render

    def render(state, request_id=0):
        time.sleep(0.5)
        return slow(state, request_id)

    monkeypatch.setattr(engine, "render", render)
    start = time.perf_counter()
    panel.ui.seedSpinBox.setValue(7)
    panel.render_now()
    app.processEvents()
    assert time.perf_counter() - start < 0.2
    assert settle(panel, app).state.seed == 7


def test_seed_history_goes_back_and_forward(panel, app):
    for seed in (3, 4, 5):
        panel.ui.seedSpinBox.setValue(seed)
    panel.ui.previousSeedButton.click()
    assert panel.ui.seedSpinBox.value() == 4
    panel.ui.previousSeedButton.click()
    assert panel.ui.seedSpinBox.value() == 3
    panel.ui.nextSeedButton.click()
    assert panel.ui.seedSpinBox.value() == 4
    panel.ui.randomSeedButton.click()
    assert panel.seed_history[-1] == panel.ui.seedSpinBox.value()
    assert not panel.ui.nextSeedButton.isEnabled()


def test_there_is_one_slider_per_direction_and_reset_returns_them_to_zero(panel, app, engine):
    sliders = panel.direction_sliders
    assert len(sliders) == len(engine.directions) >= 4
    base = settle(panel, app).volume
    sliders[0].setValue(25)
    moved = settle(panel, app)
    assert moved.state.directions[0] == 2.5 and np.abs(moved.volume - base).max() > 1e-3
    panel.ui.resetDirectionsButton.click()
    reset = settle(panel, app)
    assert reset.state.directions == [0.0] * len(sliders)
    np.testing.assert_allclose(reset.volume, base, atol=1e-6)


def test_style_mixing_takes_the_finer_blocks_from_the_second_seed(panel, app, engine):
    panel.ui.seedSpinBox.setValue(11)
    panel.ui.styleMixingCheckBox.setChecked(True)
    panel.ui.mixSeedSpinBox.setValue(12)
    panel.ui.crossoverSlider.setValue(2)
    result = settle(panel, app)
    expected = engine.generator.generate(seeds=[11], psi=0.7, style_mix=([12], 2))[0]
    np.testing.assert_allclose(result.volume, expected, atol=1e-6)


def test_the_greyed_noise_seed_shows_the_seed_whose_noise_is_used_while_it_follows_the_seed(panel, app):
    panel.ui.seedSpinBox.setValue(12)
    settle(panel, app)
    assert panel.ui.noiseFollowsSeedCheckBox.isChecked() and not panel.ui.noiseSeedSpinBox.isEnabled()
    assert panel.ui.noiseSeedSpinBox.value() == 12
    renders = panel.renders
    panel.ui.noiseFollowsSeedCheckBox.setChecked(False)  # unticked, it starts from the noise already shown
    result = settle(panel, app)
    assert panel.ui.noiseSeedSpinBox.value() == 12 and panel.renders == renders + 1 and result.state.noise_seed == 12


def test_resampling_noise_keeps_the_anatomy_and_changes_the_detail(panel, app, engine):
    base = settle(panel, app)
    panel.ui.resampleNoiseButton.click()
    resampled = settle(panel, app)
    assert not resampled.state.noise_follows_seed and resampled.state.noise() != base.state.noise()
    assert np.abs(resampled.volume - base.volume).max() > 1e-4
    assert np.allclose(engine.styles(resampled.state), engine.styles(base.state))


def test_interpolation_runs_from_seed_a_to_seed_b(panel, app, engine):
    panel.ui.seedSpinBox.setValue(1)
    panel.ui.interpolationCheckBox.setChecked(True)
    panel.ui.seedBSpinBox.setValue(2)
    start = settle(panel, app).volume
    np.testing.assert_allclose(start, engine.generator.generate(seeds=[1], psi=0.7)[0], atol=1e-5)
    panel.ui.interpolationSlider.setValue(100)
    end = settle(panel, app).volume
    np.testing.assert_allclose(end, engine.generator.generate(seeds=[2], psi=0.7, noise_seed=1)[0], atol=1e-5)


def test_play_advances_t(panel, app):
    panel.ui.interpolationCheckBox.setChecked(True)
    panel.ui.playButton.setChecked(True)
    deadline = time.perf_counter() + 5
    while panel.state.t < 0.1 and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)
    panel.ui.playButton.setChecked(False)
    assert panel.state.t >= 0.1 and panel.ui.playButton.text() == "Play"


def test_export_writes_nifti_sidecar_mip_and_surface(panel, app, tmp_path):
    panel.ui.seedSpinBox.setValue(9)
    panel.ui.surfaceFormatComboBox.setCurrentIndex(0)
    settle(panel, app)
    panel.ui.exportVolumeButton.click()
    settle(panel, app)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cow_seed0009.json", "cow_seed0009.nii.gz", "cow_seed0009_mip.png", "cow_seed0009_surface.stl"]
    sidecar = json.loads((tmp_path / "cow_seed0009.json").read_text())
    assert sidecar["seed"] == 9 and sidecar["psi"] == 0.7 and sidecar["noise_seed"] == 9
    assert "Wrote" in panel.ui.statusLabel.text()
    first = (tmp_path / "cow_seed0009.nii.gz").read_bytes()
    panel.ui.truncationSlider.setValue(150)
    settle(panel, app)
    panel.ui.exportVolumeButton.click()  # the same seed again, other settings: a new file, the first one kept
    settle(panel, app)
    assert (tmp_path / "cow_seed0009.nii.gz").read_bytes() == first
    assert json.loads((tmp_path / "cow_seed0009-2.json").read_text())["psi"] == 1.5


def test_export_interpolation_writes_frames_and_a_gif(panel, app, tmp_path):
    panel.ui.interpolationCheckBox.setChecked(True)
    panel.ui.framesSpinBox.setValue(4)
    panel.ui.exportInterpolationButton.click()
    settle(panel, app)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cow_interp_1_2.gif", "cow_interp_1_2.json"] + [f"cow_interp_1_2_{i:03d}.png" for i in range(4)]
    panel.ui.framesSpinBox.setValue(2)
    panel.ui.exportInterpolationButton.click()
    settle(panel, app)
    added = sorted(set(p.name for p in tmp_path.iterdir()) - set(names))
    assert added == ["cow_interp_1_2-2.gif", "cow_interp_1_2-2.json", "cow_interp_1_2-2_000.png", "cow_interp_1_2-2_001.png"]


def test_the_panels_mips_shown_and_exported_carry_the_orientation_letters_as_generated_pictures_do(panel, app, engine,
                                                                                                      tmp_path):
    import dataclasses

    from PIL import Image

    from CircleOfWillisGANLib.mip import mip_panel
    from CircleOfWillisGANLib.volume_io import spacing_of

    shown = settle(panel, app)
    assert np.array_equal(shown.mip, mip_panel(shown.volume, spacing_of(shown.affine), orientation_letters=True))
    state = PanelState(interpolate=True, frames=2, surface=False)
    frames = engine.export_interpolation(state, str(tmp_path))["frames"]
    for t, frame in zip((0.0, 1.0), frames):
        volume = engine.volume(dataclasses.replace(state.validated(), t=t))
        lettered = mip_panel(volume, spacing_of(engine.affine), orientation_letters=True)
        assert np.array_equal(np.asarray(Image.open(frame)), lettered)


def test_a_bad_model_file_gives_one_message_in_the_status_line_and_one_dialog(panel, app, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    panel.load_model(str(bad))
    settle(panel, app)
    assert len(panel.errors) == 1 and "broken.safetensors" in panel.errors[0]
    assert panel.ui.statusLabel.text().startswith("Error:") and "Traceback" not in panel.ui.statusLabel.text()


def test_without_a_bundled_demo_model_the_panel_says_to_open_a_model(app, monkeypatch):
    from CircleOfWillisGANLib import resources
    from CircleOfWillisGANLib.errors import CheckpointError

    def missing():
        raise CheckpointError("not bundled")

    monkeypatch.setattr(resources, "demo_model_path", missing)
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    errors = []
    controller = PanelController(ui, pyside6_qt(), show_error=errors.append)
    controller.load_model("demo", quiet=True)
    assert controller.wait_idle(app=app)
    assert "Open model" in ui.statusLabel.text() and errors == []
    assert ui.openModelButton.isEnabled() and not ui.generationGroupBox.isEnabled()
    controller.close()


def test_a_saved_state_restores_every_widget(panel, app):
    state = PanelState(seed=77, psi=1.2, noise_follows_seed=False, noise_seed=5, directions=[1.0, -0.5],
                       mixing=True, mix_seed=8, crossover=1, interpolate=True, seed_b=9, t=0.25, space="w",
                       auto_threshold=False, threshold=0.4, smoothing=3, frames=8, surface_format="obj")
    restored = PanelState.from_dict(json.loads(json.dumps(state.to_dict())))
    panel.apply_state(restored)
    now = panel.state
    for name in ("seed", "psi", "noise_seed", "mixing", "mix_seed", "crossover", "interpolate", "seed_b", "t", "space",
                 "auto_threshold", "threshold", "smoothing", "frames", "surface_format"):
        assert getattr(now, name) == getattr(state, name), name
    assert now.directions[:2] == [1.0, -0.5]
    assert settle(panel, app).state.seed == 77


def test_a_state_restored_on_the_first_load_is_not_reapplied_by_later_loads(panel, app, engine):
    panel.set_engine(engine, then=lambda e: panel.apply_state(PanelState(seed=5), render=False))
    assert settle(panel, app).state.seed == 5
    panel.ui.seedSpinBox.setValue(42)
    panel.set_engine(engine)  # the user opens another model or switches the device
    assert settle(panel, app).state.seed == 42


def test_out_of_range_values_are_clamped_to_the_declared_ranges():
    state = PanelState(psi=5.0, t=-1.0, directions=[9.0]).validated()
    assert state.psi == 2.0 and state.t == 0.0 and state.directions == [3.0]
    switches = PanelState.from_dict({"mixing": 1, "interpolate": 1, "surface": 0}).validated()  # as some writers store them
    assert [switches.mixing, switches.interpolate, switches.surface] == [True, True, False]
    assert all(isinstance(v, bool) for v in (switches.mixing, switches.interpolate, switches.surface))  # as Qt takes them


@pytest.mark.parametrize("setting", [{"psi": "abc"}, {"t": float("nan")}, {"directions": 5.0}, {"smoothing": None},
                                     {"mixing": "false"}, {"surface": 2}, {"model": 7}])
def test_values_that_are_not_numbers_are_named_not_clamped(setting):
    with pytest.raises(InputError, match="panel setting"):
        PanelState(**setting).validated()


def test_exporting_without_an_output_folder_is_refused_instead_of_writing_here(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="no output folder"):
        engine.export_volume(PanelState(), "")
    assert list(tmp_path.iterdir()) == []


def test_the_qt_binding_keeps_none_alive_through_thousands_of_widget_calls(app):
    import sys

    from PySide6.QtWidgets import QSlider

    slider = QSlider()
    before = sys.getrefcount(None)
    for i in range(5000):  # PySide6 6.12.0 drops a reference to None on each call: Python 3.11 then aborts
        slider.setValue(i % 7)
        slider.setEnabled(bool(i % 2))
    assert sys.getrefcount(None) - before > -100


def test_playback_stops_when_the_interpolation_is_switched_off(panel, app):
    panel.ui.interpolationCheckBox.setChecked(True)
    panel.ui.playButton.setChecked(True)
    settle(panel, app)
    panel.ui.interpolationCheckBox.setChecked(False)
    settle(panel, app)
    assert not panel.ui.playButton.isChecked() and panel.ui.playButton.text() == "Play"
    t = panel.state.t
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    assert panel.state.t == t


def test_while_a_rating_owns_the_views_the_panel_stops_playing_draws_nothing_then_shows_its_state_once(panel, app):
    drawn = []
    panel.views.append(drawn.append)
    panel.ui.interpolationCheckBox.setChecked(True)
    panel.ui.playButton.setChecked(True)
    settle(panel, app)
    panel.suspend_views(True)
    assert not panel.ui.playButton.isChecked() and panel.ui.playButton.text() == "Play"
    settle(panel, app)  # the frame in flight
    t, count = panel.state.t, len(drawn)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    assert panel.state.t == t and len(drawn) == count
    panel.ui.seedSpinBox.setValue(5)  # as a projection or a model load ending during the rating renders
    assert settle(panel, app).state.seed == 5 and len(drawn) == count
    panel.suspend_views(False)
    settle(panel, app)
    assert len(drawn) == count + 1 and drawn[-1].state.seed == 5
    panel.suspend_views(True)
    panel.suspend_views(False)  # nothing was held back: what is drawn is current
    settle(panel, app)
    assert len(drawn) == count + 1


def test_a_panel_closed_during_a_rating_starts_no_render_when_the_rating_ends(panel, app):
    panel.suspend_views(True)
    panel.render_now()
    settle(panel, app)
    requests = panel.requests
    panel.close()  # Slicer unloads the module: the panel closes first, then the rating
    panel.suspend_views(False)
    assert panel.requests == requests


class _Display:
    """A stand-in for an MRML display node: its visibility and the scene it is in."""

    def __init__(self, visible):
        self.visible = visible

    def GetVisibility(self):
        return self.visible

    def SetVisibility(self, visible):
        self.visible = visible

    def GetScene(self):
        return "scene"


def test_the_slicer_scene_hides_what_it_shows_while_a_rating_owns_the_views_and_shows_exactly_that_again():
    from unittest.mock import MagicMock

    from CircleOfWillisGANLib.slicer_scene import SlicerScene

    def node(*displays):
        node = MagicMock(name="generated node")
        node.GetNumberOfDisplayNodes.return_value = len(displays)
        node.GetNthDisplayNode.side_effect = displays.__getitem__
        return node

    scene = SlicerScene(MagicMock(name="slicer"))
    slices, mip, vessels = _Display(True), _Display(True), _Display(False)  # the user had hidden the vessels
    scene.volume_node, scene.surface_node = node(slices, mip), node(vessels)
    scene.set_hidden(True)
    assert [d.visible for d in (slices, mip, vessels)] == [False, False, False]
    scene.set_hidden(True)  # a second rating start keeps what the first hid
    scene.set_hidden(False)
    assert [d.visible for d in (slices, mip, vessels)] == [True, True, False]


def test_a_restored_state_sets_the_sliders_it_does_not_name_to_zero_and_projection_needs_a_folder(panel, app, engine):
    for slider in panel.direction_sliders:
        slider.setValue(20)
    panel.apply_state(PanelState(directions=[1.0]), render=False)
    assert [s.value() for s in panel.direction_sliders] == [10] + [0] * (len(panel.direction_sliders) - 1)
    panel.ui.outputFolderLineEdit.setText("")
    panel.project_volume("/data/scan.nii.gz")
    assert "no export folder is set" in panel.ui.statusLabel.text()


def test_a_threshold_above_every_voxel_renders_the_volume_and_says_there_is_no_surface(panel, app):
    panel.ui.showSurfaceCheckBox.setChecked(True)
    panel.ui.autoThresholdCheckBox.setChecked(False)
    panel.ui.thresholdSlider.setValue(panel.ui.thresholdSlider.maximum())
    settle(panel, app)
    assert panel.last_error == "" and panel.last_result.surface is None
    assert "is not inside the volume's range" in panel.ui.statusLabel.text()
    assert panel.ui.statusLabel.text().endswith("move the threshold or tick Automatic threshold")
    panel.ui.autoThresholdCheckBox.setChecked(True)
    settle(panel, app)


def test_a_restored_state_naming_a_projection_that_is_gone_falls_back_to_seeds_and_says_so(panel, app, tmp_path):
    panel.apply_state(PanelState(projection=str(tmp_path / "gone" / "projection.safetensors")), render=False)
    assert panel.state.projection == "" and panel.ui.projectionLabel.text() == ""
    assert "the saved projection cannot be used" in panel.last_error and panel.ui.seedSpinBox.isEnabled()


def test_exports_wait_for_a_model_that_is_still_loading_and_the_count_clears_after_a_failed_load(panel, app, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    panel.load_model(str(bad))
    panel.export_volume()
    assert "a model is still loading" in panel.ui.statusLabel.text()
    settle(panel, app)
    panel.ui.outputFolderLineEdit.setText(str(tmp_path / "out"))
    settle(panel, app)
    panel.export_volume()
    settle(panel, app)
    assert "Wrote" in panel.ui.statusLabel.text() and any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("host_holds_gil", [False, True])
def test_under_a_host_that_keeps_the_gil_each_poll_waits_for_the_worker_with_the_gil_released(panel, monkeypatch,
                                                                                              host_holds_gil):
    import CircleOfWillisGANLib.panel_controller as panel_controller

    monkeypatch.setattr(panel_controller, "GIL_LEND_S", 5.0)  # far longer than the work: no race with the clock
    panel.host_holds_gil = host_holds_gil
    panel.worker.submit("export", lambda progress: f"{sum(i for i in range(2_000_000))} (Python code: needs the GIL)")
    panel._drain()  # one poll of the GUI thread, right after the work was queued
    shown = panel.ui.statusLabel.property("text")
    assert shown.startswith("Wrote 1999999000000") == host_holds_gil
    panel.wait_idle()


def _controller(app, load_engine):
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    controller = PanelController(ui, pyside6_qt(), show_error=lambda message: None, load_engine=load_engine)
    controller.root = root
    return controller


@contextlib.contextmanager
def _open_controller(app, load):
    """A panel controller over `load` for the block, closed and its window deleted after it."""
    panel = _controller(app, load)
    try:
        yield panel
    finally:
        panel.close()
        panel.root.deleteLater()


def test_switching_the_device_keeps_the_sliders_and_a_failed_switch_shows_the_device_in_use(app, engine):
    def load(source, device):
        if device == "cuda" and source == "broken-on-cuda":
            raise InputError("no CUDA here")
        return engine

    with _open_controller(app, load) as panel:
        panel.ui.deviceComboBox.addItem("CUDA")
        panel.load_model("tiny")
        settle(panel, app)
        panel.ui.seedSpinBox.setValue(9)
        panel.direction_sliders[0].setValue(20)
        settle(panel, app)
        before = panel.state
        panel.ui.deviceComboBox.setCurrentIndex(1)
        after = settle(panel, app).state
        assert (after.seed, after.directions, after.device) == (9, before.directions, "cuda") and after.directions[0] == 2.0
        panel.ui.deviceComboBox.setCurrentIndex(0)
        settle(panel, app)
        panel._model_source = "broken-on-cuda"
        panel.ui.deviceComboBox.setCurrentIndex(1)
        settle(panel, app)
        assert panel.ui.deviceComboBox.currentText() == "CPU" and panel.state.device == "cpu"


def test_a_device_switch_while_another_model_loads_is_refused_not_a_reload_of_the_old_model(app, engine):
    loads = []

    def load(source, device):
        loads.append((source, device))
        time.sleep(0.3 if source == "B" else 0.0)
        return engine

    with _open_controller(app, load) as panel:
        panel.ui.deviceComboBox.addItem("CUDA")
        panel.load_model("A")
        settle(panel, app)
        panel.load_model("B")  # Open model..., still loading
        panel.ui.deviceComboBox.setCurrentIndex(1)
        assert panel.ui.deviceComboBox.currentText() == "CPU" and "a model is still loading" in panel.last_error
        settle(panel, app)
        assert loads == [("A", "cpu"), ("B", "cpu")] and panel._model_source == "B"


def test_a_saved_state_waits_for_its_own_model_not_a_load_already_running(app, engine):
    def load(source, device):
        time.sleep(0.3 if source == "demo" else 0.0)
        return engine

    with _open_controller(app, load) as panel:
        panel.load_model("demo", quiet=True)  # the panel's start-up load, still running
        saved = PanelState(seed=77, psi=1.1, directions=[2.0, 0.0, -1.5])
        panel.load_model("scene-model", quiet=True, then=lambda e: panel.apply_state(saved, render=False))
        shown = settle(panel, app).state
        assert (shown.seed, shown.psi, shown.directions[:3]) == (77, 1.1, [2.0, 0.0, -1.5])


@pytest.mark.parametrize("gpu_here", [True, False])
def test_a_saved_state_reopens_on_its_device_where_this_machine_has_one(app, engine, gpu_here):
    devices = []

    def load(source, device):
        devices.append(device)
        return engine

    with _open_controller(app, load) as panel:
        if gpu_here:
            panel.ui.deviceComboBox.addItem("CUDA")
        panel.restore_state(PanelState(seed=12, device="cuda"))
        shown = settle(panel, app).state
        expected = "cuda" if gpu_here else "cpu"
        assert devices == [expected] and shown.device == expected and shown.seed == 12
        assert panel.ui.deviceComboBox.currentText() == expected.upper()


def test_an_older_render_does_not_undo_a_threshold_set_since(panel, app):
    import dataclasses

    panel.ui.showSurfaceCheckBox.setChecked(True)
    panel.ui.autoThresholdCheckBox.setChecked(True)
    automatic = settle(panel, app)
    panel.ui.autoThresholdCheckBox.setChecked(False)
    panel.ui.thresholdSlider.setValue(500)
    settle(panel, app)
    panel._show(dataclasses.replace(automatic, threshold=0.123))  # the automatic render arrives late
    assert panel.state.threshold == 0.5 and panel.ui.thresholdValueLabel.text() == "0.500"


def test_the_export_folder_may_start_at_home_and_the_surface_keeps_the_panels_smoothing(panel, app, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    panel.ui.outputFolderLineEdit.setText("~/exports")
    assert panel.state.output_dir == str(tmp_path / "exports")
    panel.ui.smoothingSpinBox.setValue(0)
    settle(panel, app)
    panel.export_volume()
    settle(panel, app)
    sidecar = json.loads(next((tmp_path / "exports").glob("*.json")).read_text())
    assert sidecar["surface"]["smoothing_iterations"] == 0


def test_a_typed_seed_enters_the_history_once_not_keystroke_by_keystroke(panel, app):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    box = panel.ui.seedSpinBox
    box.lineEdit().selectAll()
    QTest.keyClicks(box, "345")
    QTest.keyClick(box, Qt.Key_Return)
    settle(panel, app)
    assert panel.seed_history[-2:] == [1, 345] and panel.state.seed == 345


def test_a_step_after_loading_that_fails_unexpectedly_is_reported_and_the_volume_is_still_shown(app, engine):
    with _open_controller(app, lambda source, device: engine) as panel:
        def too_large_for_the_seed_box(loaded):
            raise OverflowError("Python int too large to convert to C int")

        renders = panel.renders
        panel.set_engine(engine, then=too_large_for_the_seed_box)
        settle(panel, app)
        assert panel.renders == renders + 1 and "OverflowError" in panel.ui.statusLabel.text()


def test_the_seed_history_holds_only_seeds_shown_not_the_boxs_default_before_a_start_seed(app, engine):
    with _open_controller(app, lambda source, device: engine) as panel:
        panel.set_engine(engine, then=lambda loaded: panel.ui.seedSpinBox.setValue(12))  # `cowgan explore --seed 12`
        assert settle(panel, app).state.seed == 12
        assert panel.seed_history == [12] and not panel.ui.previousSeedButton.isEnabled()


def test_the_seed_first_shown_starts_the_history(app, engine):
    with _open_controller(app, lambda source, device: engine) as panel:
        assert panel.seed_history == []
        panel.set_engine(engine)
        settle(panel, app)
        panel.ui.seedSpinBox.setValue(5)
        settle(panel, app)
        assert panel.seed_history == [1, 5] and panel.ui.previousSeedButton.isEnabled()


def _slow_projection(written, steps=300):
    """A stand-in for PanelEngine.project_volume: `steps` steps of 10 ms, each reporting progress, then a file."""
    def project(path, out_dir, progress=None, source=""):
        for i in range(steps):
            time.sleep(0.01)
            progress(i, steps)
        written.write_text("projected")
        return str(written)

    return project


def _wait_until(condition, app, timeout_s=5.0):
    deadline = time.perf_counter() + timeout_s
    while not condition() and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)
    return condition()


def test_closing_the_panel_cancels_a_running_projection_so_nothing_is_written_after(panel, app, engine, tmp_path,
                                                                                   monkeypatch):
    written = tmp_path / "written-after-close"
    monkeypatch.setattr(engine, "project_volume", _slow_projection(written))
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    panel.project_volume(str(tmp_path / "scan.nii.gz"))
    assert _wait_until(lambda: panel.ui.progressBar.maximum() == 300, app)  # the projection is under way
    panel.close()
    assert _wait_until(lambda: panel.worker.idle, app, timeout_s=2.0), "the projection ran on after the panel closed"
    time.sleep(0.05)
    assert not written.exists()


def test_a_cancelled_projection_stays_said_in_the_status_of_the_render_queued_behind_it(panel, app, engine, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(engine, "project_volume", _slow_projection(tmp_path / "never"))
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    panel.project_volume(str(tmp_path / "scan.nii.gz"))
    assert _wait_until(lambda: panel.ui.progressBar.maximum() == 300, app)
    panel.ui.truncationSlider.setValue(120)  # the user moves a slider while it runs: a render waits behind it
    panel.render_now()
    panel.project_volume()  # pressed again: cancel
    result = settle(panel, app)
    assert result.state.psi == 1.2 and "generated in" in panel.ui.statusLabel.text()
    assert "projection cancelled: nothing was written" in panel.ui.statusLabel.text()
    panel.ui.seedSpinBox.setValue(3)  # the next change is news of its own
    settle(panel, app)
    assert "cancelled" not in panel.ui.statusLabel.text()


def _fake_projection(engine, monkeypatch, seed=21):
    """Make every projection path read as a projection of seed `seed`'s w+ (no file, no optimisation)."""
    import torch

    from CircleOfWillisGANLib.projection_io import ProjectedLatent

    latent = ProjectedLatent(engine.generator.styles(seeds=[seed])[0], torch.zeros(1), {})
    monkeypatch.setattr(engine, "projection", lambda path: latent)
    return latent


def test_a_projection_mixed_with_a_second_seed_records_the_psi_it_used_and_the_panel_shows_that_psi(
        panel, app, engine, monkeypatch):
    latent = _fake_projection(engine, monkeypatch)
    state = PanelState(psi=0.7, projection="projection.safetensors", mixing=True, mix_seed=8, crossover=2)
    mixing = engine.sidecar(state)["style_mixing"]
    assert mixing == {"second_seed": 8, "crossover_block": 2, "psi": 1.0}
    remade = engine.generator.styles(w=latent.ws[None], psi=mixing["psi"], style_mix=([8], 2))
    assert np.allclose(remade, engine.styles(state))
    assert engine.sidecar(PanelState(psi=0.6, mixing=True, mix_seed=8))["style_mixing"]["psi"] == 0.6
    panel.apply_state(state, render=False)
    assert panel.ui.truncationValueLabel.text() == "1.00" and not panel.ui.truncationSlider.isEnabled()
    panel.clear_projection()
    assert panel.ui.truncationValueLabel.text() == "0.70"


def test_the_status_line_names_style_mixing_moved_directions_and_resampled_noise(panel, app, engine):
    panel.ui.seedSpinBox.setValue(4)
    settle(panel, app)
    assert panel.ui.statusLabel.text().startswith("seed 4, psi 0.70: generated in")
    panel.ui.styleMixingCheckBox.setChecked(True)
    panel.ui.mixSeedSpinBox.setValue(9)
    panel.ui.crossoverSlider.setValue(2)
    panel.direction_sliders[0].setValue(15)
    panel.ui.noiseFollowsSeedCheckBox.setChecked(False)
    panel.ui.noiseSeedSpinBox.setValue(33)
    settle(panel, app)
    first = engine.directions[0].label
    assert panel.ui.statusLabel.text().startswith(
        f"seed 4, psi 0.70, noise seed 33, mixed with seed 9 from block 2, {first} +1.5 SD: generated in")
