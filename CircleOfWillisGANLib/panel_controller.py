"""The panel's controller: binds the widgets of Resources/UI/CircleOfWillisGAN.ui to a PanelEngine.

It runs under PySide6 (the standalone explorer, the tests) and under PythonQt (3D Slicer): it receives the
Qt namespace and a namespace of the .ui's widgets by object name, reads values with property("value"), and
never imports a Qt binding itself. Slider moves are debounced and coalesced (the newest value wins);
generation runs on one worker thread whose results a main-thread timer picks up, so the GUI never freezes.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import qt_dialogs
from .background_worker import Worker
from .direction_sliders import DirectionSliders
from .errors import CoWGANError, OutputError
from .panel_engine import (MAX_UI_SEED, PANEL_SURFACE_FORMATS, PROJECTION_PSI, PanelEngine, PanelState, RenderResult,
                           default_engine_loader, model_card_summary)
from .seed_history import SeedHistory

log = logging.getLogger(__name__)
DEBOUNCE_MS = 30
POLL_MS = 15
GIL_LEND_S = 0.010  # per poll, how long a host that keeps the GIL while idle waits for the worker with it released
PLAY_STEP = 0.05


class PanelController:
    """Keeps the panel's widgets, a PanelState and the views in step; see the module docstring."""

    def __init__(self, ui: Any, qt: Any, load_engine: Optional[Callable[[str, str], PanelEngine]] = None,
                 show_error: Optional[Callable[[str], None]] = None, debounce_ms: int = DEBOUNCE_MS,
                 host_holds_gil: bool = False) -> None:
        self.ui, self.qt = ui, qt
        # True under 3D Slicer: PythonQt (thread support off) keeps Python's GIL on the GUI thread while Qt idles, so
        # the worker runs only while the GUI thread runs Python; each poll then waits for the worker's result with
        # the GIL released, for up to GIL_LEND_S. PySide6 releases the GIL in its event loop and needs none of this.
        self.host_holds_gil = host_holds_gil
        self.engine: Optional[PanelEngine] = None
        self.views: List[Callable[[RenderResult], None]] = []  # called on the GUI thread with each new result
        self.state_listeners: List[Callable[[Dict[str, Any]], None]] = []  # e.g. the Slicer parameter node
        self.engine_listeners: List[Callable[[PanelEngine], None]] = []  # called after every model load
        self.projection_listeners: List[Callable[[], None]] = []  # called when a projection ends, however it ends
        self.last_result: Optional[RenderResult] = None
        self.last_error = ""
        self._note: Tuple[str, int, bool] = ("", 0, False)  # (text, last render request it stays for, is an error)
        self.requests = 0  # render requests made (after debouncing)
        self._first_request = 1  # the first render request made with the current engine: older results are stale
        self._loads_pending = 0
        self._loading_device_index = 0  # where the device box points while a load runs (0: CPU, 1: CUDA)
        self._projecting = self._cancel_projection = False
        self._views_suspended = self._withheld = False  # see suspend_views
        self.renders = 0  # results shown
        self._load_engine = load_engine or default_engine_loader
        self._show_error = show_error
        self._error_open = False
        self._seeds = SeedHistory()
        self._updating = False
        self._directions = DirectionSliders(qt, ui.directionsContainer.layout())
        self._request_time = 0.0
        self._projection = ""
        self.worker = Worker()
        self._debounce = self._timer(debounce_ms, self._request_render, single_shot=True)
        self._poll = self._timer(POLL_MS, self._drain)
        self._player = self._timer(120, self._play_step)
        self.choose_model_file: Callable[[], str] = lambda: qt_dialogs.open_file(
            qt, "Open a CircleOfWillisGAN model", qt_dialogs.MODEL_FILTER)
        self.choose_volume_file: Callable[[], str] = lambda: qt_dialogs.open_file(
            qt, "Project a TOF-MRA volume, or show a saved projection", qt_dialogs.SCAN_OR_PROJECTION_FILTER)
        self.choose_folder: Callable[[], str] = lambda: qt_dialogs.choose_folder(
            qt, "Export folder", str(self.ui.outputFolderLineEdit.property("text") or ""))
        self._setup_widgets()
        self._connect()
        self._sync_enabled()

    # ----------------------------------------------------------------------------------------------------
    # Setup
    def _timer(self, ms: int, slot: Callable[[], None], single_shot: bool = False) -> Any:
        timer = self.qt.QTimer()
        timer.setInterval(ms)
        timer.setSingleShot(single_shot)
        timer.timeout.connect(slot)
        return timer

    def _setup_widgets(self) -> None:
        ui = self.ui
        ui.deviceComboBox.clear()
        ui.deviceComboBox.addItem("CPU")
        if _cuda_available():
            ui.deviceComboBox.addItem("CUDA")
        if not ui.outputFolderLineEdit.property("text"):
            ui.outputFolderLineEdit.setProperty("text", _default_output_dir())
        ui.surfaceFormatComboBox.setCurrentIndex(0)
        ui.progressBar.setVisible(False)
        for name in ("seedSpinBox", "noiseSeedSpinBox", "mixSeedSpinBox", "seedBSpinBox"):
            getattr(ui, name).setMaximum(MAX_UI_SEED)

    def _connect(self) -> None:
        ui = self.ui
        for name in ("seedSpinBox", "noiseSeedSpinBox", "mixSeedSpinBox", "seedBSpinBox", "smoothingSpinBox",
                     "framesSpinBox", "truncationSlider", "crossoverSlider", "interpolationSlider", "thresholdSlider"):
            getattr(ui, name).valueChanged.connect(lambda *args, n=name: self._on_changed(n))
        for name in ("noiseFollowsSeedCheckBox", "styleMixingCheckBox", "interpolationCheckBox", "showSurfaceCheckBox",
                     "autoThresholdCheckBox"):
            getattr(ui, name).toggled.connect(lambda *args, n=name: self._on_changed(n))
        ui.interpolationSpaceComboBox.currentIndexChanged.connect(lambda *args: self._on_changed("space"))
        ui.surfaceFormatComboBox.currentIndexChanged.connect(lambda *args: self._notify_state())
        ui.outputFolderLineEdit.editingFinished.connect(self._notify_state)
        for name in ("truncationSlider", "crossoverSlider", "interpolationSlider", "thresholdSlider"):
            getattr(ui, name).sliderReleased.connect(self.render_now)
        ui.randomSeedButton.clicked.connect(self.random_seed)
        ui.previousSeedButton.clicked.connect(self.previous_seed)
        ui.nextSeedButton.clicked.connect(self.next_seed)
        ui.resampleNoiseButton.clicked.connect(self.resample_noise)
        ui.resetDirectionsButton.clicked.connect(self.reset_directions)
        ui.playButton.toggled.connect(self.set_playing)
        ui.demoModelButton.clicked.connect(lambda *args: self.load_model("demo"))
        ui.openModelButton.clicked.connect(self.open_model)
        ui.deviceComboBox.currentIndexChanged.connect(self._on_device_changed)
        ui.browseOutputButton.clicked.connect(self.browse_output)
        ui.exportVolumeButton.clicked.connect(self.export_volume)
        ui.exportInterpolationButton.clicked.connect(self.export_interpolation)
        ui.projectVolumeButton.clicked.connect(lambda *args: self.project_volume())
        ui.clearProjectionButton.clicked.connect(self.clear_projection)

    # ----------------------------------------------------------------------------------------------------
    # State <-> widgets
    @property
    def state(self) -> PanelState:
        """The panel's current values."""
        ui = self.ui
        return PanelState(
            seed=int(ui.seedSpinBox.property("value")), psi=int(ui.truncationSlider.property("value")) / 100.0,
            noise_follows_seed=bool(ui.noiseFollowsSeedCheckBox.property("checked")), noise_seed=int(ui.noiseSeedSpinBox.property("value")),
            directions=self._directions.amounts(),
            mixing=bool(ui.styleMixingCheckBox.property("checked")), mix_seed=int(ui.mixSeedSpinBox.property("value")),
            crossover=int(ui.crossoverSlider.property("value")), interpolate=bool(ui.interpolationCheckBox.property("checked")),
            seed_b=int(ui.seedBSpinBox.property("value")), t=int(ui.interpolationSlider.property("value")) / 100.0,
            space="z" if ui.interpolationSpaceComboBox.property("currentIndex") == 0 else "w",
            surface=bool(ui.showSurfaceCheckBox.property("checked")), auto_threshold=bool(ui.autoThresholdCheckBox.property("checked")),
            threshold=int(ui.thresholdSlider.property("value")) / 1000.0, smoothing=int(ui.smoothingSpinBox.property("value")),
            frames=int(ui.framesSpinBox.property("value")),
            surface_format=PANEL_SURFACE_FORMATS[max(0, ui.surfaceFormatComboBox.property("currentIndex"))],
            output_dir=os.path.expanduser(str(ui.outputFolderLineEdit.property("text"))),
            model=str(getattr(self, "_model_source", "demo")),
            device="cuda" if ui.deviceComboBox.property("currentText") == "CUDA" else "cpu", projection=self._projection)

    def apply_state(self, state: PanelState, render: bool = True) -> None:
        """Show `state` in the widgets (e.g. restored from a scene) without one render per widget."""
        state = state.validated()
        ui = self._ui_values(state)
        self._updating = True
        try:
            for widget, value in ui:
                widget.setProperty("checked" if isinstance(value, bool) else "value", value)
            ui_ = self.ui
            ui_.interpolationSpaceComboBox.setCurrentIndex(0 if state.space == "z" else 1)
            ui_.surfaceFormatComboBox.setCurrentIndex(PANEL_SURFACE_FORMATS.index(state.surface_format))
            if state.output_dir:
                ui_.outputFolderLineEdit.setProperty("text", state.output_dir)
            self._directions.set_amounts(state.directions)  # sliders the state does not name go to 0
            self._projection = self._usable_projection(state.projection)
        finally:
            self._updating = False
        self._remember_seed()
        self._sync_enabled()
        if render:
            self.render_now()

    def _ui_values(self, s: PanelState) -> List[Tuple[Any, Any]]:
        ui = self.ui
        return [(ui.seedSpinBox, s.seed), (ui.truncationSlider, int(round(s.psi * 100))),
                (ui.noiseFollowsSeedCheckBox, s.noise_follows_seed), (ui.noiseSeedSpinBox, s.noise_seed),
                (ui.styleMixingCheckBox, s.mixing), (ui.mixSeedSpinBox, s.mix_seed), (ui.crossoverSlider, s.crossover),
                (ui.interpolationCheckBox, s.interpolate), (ui.seedBSpinBox, s.seed_b),
                (ui.interpolationSlider, int(round(s.t * 100))), (ui.showSurfaceCheckBox, s.surface),
                (ui.autoThresholdCheckBox, s.auto_threshold), (ui.thresholdSlider, int(round(s.threshold * 1000))),
                (ui.smoothingSpinBox, s.smoothing), (ui.framesSpinBox, s.frames)]

    def _on_changed(self, name: str) -> None:
        if self._updating:
            return
        if name == "seedSpinBox":
            self._remember_seed()
        self._sync_enabled()
        self.schedule_render()

    def _sync_enabled(self) -> None:
        ui, s = self.ui, self.state
        ui.truncationValueLabel.setProperty("text", f"{PROJECTION_PSI if s.projection else s.psi:.2f}")
        ui.truncationValueLabel.setProperty("toolTip", "A projection's w+ (and a second seed mixed into it) is used "
                                            "untruncated: psi 1" if s.projection else "")
        ui.interpolationValueLabel.setProperty("text", f"{s.t:.2f}")
        ui.crossoverValueLabel.setProperty("text", str(s.crossover))
        ui.thresholdValueLabel.setProperty("text", f"{s.threshold:.3f}")
        has_model, seeds = self.engine is not None, not s.projection  # a projection has its own w+ and noise
        for name in ("generationGroupBox", "directionsGroupBox", "styleMixingGroupBox", "surfaceGroupBox",
                     "exportGroupBox"):
            getattr(ui, name).setEnabled(has_model)
        ui.interpolationGroupBox.setEnabled(has_model and seeds)
        ui.exportInterpolationButton.setEnabled(has_model and seeds)
        for name in ("seedSpinBox", "randomSeedButton", "truncationSlider", "noiseFollowsSeedCheckBox",
                     "resampleNoiseButton"):
            getattr(ui, name).setEnabled(seeds)
        ui.noiseSeedSpinBox.setEnabled(seeds and not s.noise_follows_seed)
        if s.noise_follows_seed and s.noise_seed != s.seed:  # the greyed box shows the noise seed in use
            updating, self._updating = self._updating, True
            ui.noiseSeedSpinBox.setProperty("value", s.seed)
            self._updating = updating
        for name in ("mixSeedSpinBox", "crossoverSlider"):
            getattr(ui, name).setEnabled(s.mixing)
        for name in ("seedBSpinBox", "interpolationSlider", "playButton", "interpolationSpaceComboBox"):
            getattr(ui, name).setEnabled(s.interpolate)
        if not (s.interpolate and seeds) and ui.playButton.property("checked"):
            ui.playButton.setProperty("checked", False)  # playback stops with the interpolation it plays
        ui.thresholdSlider.setEnabled(s.surface and not s.auto_threshold)
        ui.clearProjectionButton.setEnabled(bool(s.projection))
        ui.projectionLabel.setProperty("text", self._projection_text(s.projection))
        ui.previousSeedButton.setEnabled(seeds and self._seeds.can_go_back)
        ui.nextSeedButton.setEnabled(seeds and self._seeds.can_go_forward)
        self._directions.show_values()

    def _notify_state(self, *args: Any) -> None:
        data = self.state.to_dict()
        for listener in self.state_listeners:
            listener(data)

    # ----------------------------------------------------------------------------------------------------
    # Seeds
    def _set_seed(self, seed: int, remember: bool = True) -> None:
        self._updating = True
        self.ui.seedSpinBox.setProperty("value", int(seed))
        self._updating = False
        if remember:
            self._remember_seed()
        self._sync_enabled()
        self.render_now()

    def _remember_seed(self) -> None:
        self._seeds.visit(int(self.ui.seedSpinBox.property("value")))

    def random_seed(self, *args: Any) -> None:
        self._set_seed(random.randint(0, MAX_UI_SEED))

    def previous_seed(self, *args: Any) -> None:
        seed = self._seeds.back()
        if seed is not None:
            self._set_seed(seed, remember=False)

    def next_seed(self, *args: Any) -> None:
        seed = self._seeds.forward()
        if seed is not None:
            self._set_seed(seed, remember=False)

    @property
    def seed_history(self) -> List[int]:
        return self._seeds.seeds

    def resample_noise(self, *args: Any) -> None:
        """Same anatomy (w), new noise: a new random noise seed."""
        self._updating = True
        self.ui.noiseFollowsSeedCheckBox.setProperty("checked", False)
        self.ui.noiseSeedSpinBox.setProperty("value", random.randint(0, MAX_UI_SEED))
        self._updating = False
        self._sync_enabled()
        self.render_now()

    # ----------------------------------------------------------------------------------------------------
    # Directions
    def _build_direction_sliders(self) -> None:
        self._directions.build(self.engine.directions if self.engine else [],
                               changed=lambda: self._on_changed("direction"), released=self.render_now)

    @property
    def direction_sliders(self) -> List[Any]:
        return list(self._directions.sliders)

    @property
    def direction_names(self) -> List[str]:
        return [str(label.property("text")) for label in self._directions.names]

    def reset_directions(self, *args: Any) -> None:
        self._updating = True
        self._directions.set_amounts([])
        self._updating = False
        self._sync_enabled()
        self.render_now()

    # ----------------------------------------------------------------------------------------------------
    # Model
    def open_model(self, *args: Any) -> None:
        path = self.choose_model_file()
        if path:
            self.load_model(path)

    def _on_device_changed(self, *args: Any) -> None:
        """The same model on the other device, showing what was shown (sliders, projection) once it is in. Refused
        while a model loads: the model in use would be loaded again and replace the one the user asked for."""
        if not self._updating and self.engine is not None and self._loading():
            self._updating = True
            self.ui.deviceComboBox.setCurrentIndex(self._loading_device_index)
            self._updating = False
        elif not self._updating and self.engine is not None:
            shown = self.state
            self.load_model(getattr(self, "_model_source", "demo"),
                            then=lambda engine: self.apply_state(shown, render=False))

    def _show_engine_device(self) -> None:
        """Point the device box at the device the model in use runs on (after a load on another one failed)."""
        if self.engine is not None:
            self._updating = True
            self.ui.deviceComboBox.setCurrentIndex(1 if self.engine.generator.device.type == "cuda" else 0)
            self._updating = False

    def load_model(self, source: str, device: Optional[str] = None, quiet: bool = False,
                   then: Optional[Callable[[PanelEngine], None]] = None) -> None:
        """Load a model on the worker thread ("demo", a .safetensors file or a reference .pt, converted); `then` runs
        once this load is in (e.g. to show a saved state made with this model), not after any other load.

        With `quiet` (at start-up) a failure is reported in the status line only, not in a dialog."""
        device = device or self.state.device
        self._updating = True  # the device box shows the device the model is loading on
        self._loading_device_index = 1 if device == "cuda" and self._offers_cuda() else 0
        self.ui.deviceComboBox.setCurrentIndex(self._loading_device_index)
        self._updating = False
        converting = str(source).endswith(".pt")
        self._busy_message("Converting the reference checkpoint (one minute for the paper model)..." if converting
                           else f"Loading {'the demo model' if source == 'demo' else source}...")
        self._loads_pending += 1
        self.worker.submit("quiet-load" if quiet else "load",
                           lambda progress: (source, self._load_engine(source, device), then))
        self._poll.start()

    def restore_state(self, saved: PanelState) -> None:
        """Load the model a saved state was made with, on the saved device where this machine has it (else the CPU),
        then show the state: its sliders belong to that model."""
        device = "cuda" if saved.device == "cuda" and self._offers_cuda() else "cpu"
        self.load_model(saved.model, device=device, quiet=True, then=lambda engine: self.apply_state(saved, render=False))

    def _offers_cuda(self) -> bool:
        """Whether the device box lists CUDA (it does where this machine has a GPU)."""
        return int(self.ui.deviceComboBox.property("count")) > 1

    def _loading(self) -> bool:
        """True (and says so in the status line) while a model is being loaded: work queued now would use the old one."""
        if self._loads_pending:
            self._report_error(CoWGANError("a model is still loading: wait until it is in, then press again"),
                               dialog=False)
        return bool(self._loads_pending)

    def set_engine(self, engine: PanelEngine, source: str = "",
                   then: Optional[Callable[[PanelEngine], None]] = None) -> None:
        """Use a loaded engine now (the worker calls this through the result queue); `then` is its load's own step."""
        self.engine = engine
        self._first_request = self.requests + 1
        self._model_source = source or str(engine.generator.source)
        gen = engine.generator
        self.ui.modelNameLabel.setProperty("text", f"Model: {gen.metadata.get('name') or self._model_source}")
        self.ui.modelCardLabel.setProperty("text", model_card_summary(gen))
        self.ui.crossoverSlider.setMaximum(max(1, gen.num_ws - 1))
        self._projection = ""
        self._build_direction_sliders()
        self._sync_enabled()
        failed = ""
        for listener in self.engine_listeners + ([then] if then else []):
            try:
                listener(engine)
            except Exception as exc:  # e.g. a saved state that does not fit: the model is in, say what failed, show it
                if not isinstance(exc, CoWGANError):
                    log.exception("CircleOfWillisGAN: a step after loading the model failed")
                self._report_error(exc, dialog=False)
                failed = self.last_error
        self.render_now()
        if failed:
            self._keep_note(f"Error: {failed}", error=True)

    # ----------------------------------------------------------------------------------------------------
    # Projection of a patient's volume
    def project_volume(self, path: str = "", source: str = "") -> None:
        """Project a NIfTI scan on the worker (results under the export folder), then move the sliders around it;
        a projection.safetensors already written (by `cowgan project`) is shown without projecting again. While a
        projection runs, the same button cancels it. `source` names the scan where `path` is a temporary copy of it
        (a Slicer volume): its folder is reused and its report's source recorded by that name, not the copy's path."""
        if self._projecting:
            self._cancel_projection = True
            self._status("Cancelling the projection after its current step...")
            return
        if self.engine is None or self._loading():
            return
        path = path or self.choose_volume_file()
        if not path:
            return
        if str(path).lower().endswith(".safetensors"):
            self.use_projection(path)
            return
        if not self.state.output_dir.strip():
            self._report_error(OutputError("no export folder is set: choose one in the Folder field, then project "
                                           "again (the projection is written there)"))
            return
        from pathlib import Path

        from .checkpoint import weights_sha256
        from .projection_io import projection_folder

        engine = self.engine
        out = projection_folder(Path(self.state.output_dir) / "projections", Path(path),
                                weights_sha256(engine.generator.checkpoint), source)
        self._busy_message(f"Projecting {Path(path).name} into the model (writing to {out})...")
        self._set_projecting(True)

        def run(progress: Callable[[int, int], None]) -> Tuple[PanelEngine, str]:
            def step(i: int, n: int) -> None:
                if self._cancel_projection:
                    raise ProjectionCancelled("projection cancelled: nothing was written")
                progress(i, n)

            return engine, engine.project_volume(path, str(out), progress=step, source=source)

        self.worker.submit("project", run)
        self._poll.start()

    @property
    def projecting(self) -> bool:
        """Whether a projection is running (pressing Project again cancels it)."""
        return self._projecting

    def _set_projecting(self, running: bool) -> None:
        self._projecting, self._cancel_projection = running, False
        self.ui.projectVolumeButton.setProperty("text", "Cancel projection" if running else "Project volume...")

    def use_projection(self, latent_path: str) -> None:
        """Make a saved projection the panel's base w+ and noise, shown first as it was reconstructed (direction
        sliders at 0, no style mixing); every slider then moves around it."""
        if self.engine is not None:
            try:
                self.engine.projection(latent_path)
            except CoWGANError as exc:
                self._report_error(exc)
                return
        self._updating = True
        try:
            self._directions.set_amounts([])
            self.ui.styleMixingCheckBox.setProperty("checked", False)
        finally:
            self._updating = False
        self._projection = str(latent_path)
        self._sync_enabled()
        self.render_now()

    def _usable_projection(self, latent_path: str) -> str:
        """`latent_path` if this model can use it; '' (generation from the seed), with the reason reported, if the
        saved projection is gone or belongs to another model."""
        if latent_path and self.engine is not None:
            try:
                self.engine.projection(latent_path)
            except CoWGANError as exc:
                self._report_error(CoWGANError(f"the saved projection cannot be used ({exc}); showing seeds again: "
                                               "project the scan again with Project volume"))
                return ""
        return latent_path

    def _projection_text(self, latent_path: str) -> str:
        """What the projection label says: which scan the sliders move around and how closely it was reproduced."""
        if not latent_path:
            return ""
        from .projection_io import describe_projection

        if self.engine is not None:
            try:
                return f"Sliders move around the {describe_projection(self.engine.projection(latent_path))}"
            except CoWGANError:  # the file went away or does not fit: the render reports that
                pass
        return f"Sliders move around the projected volume {latent_path}"

    def clear_projection(self, *args: Any) -> None:
        """Generate from the seed again."""
        self._projection = ""
        self._sync_enabled()
        self.render_now()

    # ----------------------------------------------------------------------------------------------------
    # Rendering
    def schedule_render(self) -> None:
        """Render after the widgets have been still for the debounce interval (newest value wins)."""
        self._debounce.start()

    def render_now(self, *args: Any) -> None:
        """Render the current state without waiting (a slider was released or a button pressed)."""
        self._debounce.stop()
        self._request_render()

    def _request_render(self) -> None:
        self._notify_state()
        if self.engine is None:
            return
        self.requests += 1
        request_id, state, engine = self.requests, self.state, self.engine
        self._request_time = time.perf_counter()
        self.worker.submit("render", lambda progress: engine.render(state, request_id), newest_wins=True)
        self._poll.start()

    def _drain(self) -> None:
        """Runs on the GUI thread: show finished work, report errors, stop polling when idle."""
        wait = GIL_LEND_S if self.host_holds_gil and not self.worker.idle else 0.0
        while True:
            try:
                kind, value, error = self.worker.results.get(timeout=wait) if wait else self.worker.results.get_nowait()
            except queue.Empty:
                break
            wait = 0.0
            if kind in ("load", "quiet-load"):
                self._loads_pending = max(0, self._loads_pending - 1)
            if kind == "project":
                self._set_projecting(False)
                for ended in self.projection_listeners:
                    ended()
            if isinstance(error, ProjectionCancelled):
                self._done("Projection cancelled: nothing was written")
                self._keep_note("projection cancelled: nothing was written")  # a render queued behind it follows
            elif error is not None:
                self._report_error(error, dialog=kind not in ("render", "quiet-load"))
                if kind in ("load", "quiet-load"):
                    self._show_engine_device()
            elif kind == "progress":
                self._progress(*value)
            elif kind == "render":
                if value.request_id >= self._first_request:  # not a render of the model before the last load
                    self._show(value)
            elif kind in ("load", "quiet-load"):
                self._done()
                self.set_engine(value[1], value[0], value[2])
            elif kind == "export":
                self._done(f"Wrote {value}")
            elif kind == "project":
                engine, latent = value
                if engine is self.engine:
                    self._done(f"Projected: {latent}")
                    self.use_projection(latent)
                else:
                    self._done(f"Projected with the model loaded before: {latent} (load that model to use it)")
        if self.worker.idle and self.worker.results.empty():
            self._poll.stop()

    def _show(self, result: RenderResult) -> None:
        start = time.perf_counter()
        self.last_result = result
        note, until, note_is_error = self._note
        if result.request_id > until:
            note, note_is_error = "", False
        self.last_error = note if note_is_error else ""
        if result.threshold is not None and result.state.auto_threshold and self.state.auto_threshold \
                and result.request_id == self.requests:  # an older render must not undo a threshold set since
            self._updating = True
            self.ui.thresholdSlider.setProperty("value", int(round(result.threshold * 1000)))
            self._updating = False
            self.ui.thresholdValueLabel.setProperty("text", f"{result.threshold:.3f}")
        if not self._draw(result):
            return
        self.renders += 1
        if not self._seeds.seeds and not result.state.projection:  # the first seed shown starts the history; the
            self._seeds.visit(result.state.seed)                  # spin box's default before it never was shown
            self._sync_enabled()
        shown = time.perf_counter() - start
        what = self._shown_what(result.state)
        surface = f", surface {result.surface_s:.2f} s" if result.surface is not None else ""
        notes = "".join(f"; {text}" for text in (result.surface_note, note) if text)
        self._status(f"{what}: generated in {result.generate_s:.2f} s{surface}, "
                     f"shown in {shown:.2f} s ({time.perf_counter() - self._request_time:.2f} s since the last change)"
                     f"{notes}", error=note_is_error)

    def _draw(self, result: RenderResult) -> bool:
        """Hand `result` to the views (none while they are suspended: it is only noted as held back); False, reported,
        when a view fails."""
        if self._views_suspended:
            self._withheld = True
            return True
        for view in self.views:
            try:
                view(result)
            except Exception as exc:  # a view the user broke (e.g. a deleted display node) must not stall the panel
                self._report_error(exc, dialog=False)
                return False
        return True

    def suspend_views(self, suspended: bool) -> None:
        """While `suspended` (another panel owns the views: a Visual Turing rating) stop playback and draw no result, so
        nothing but the rated case is seen; on resuming, render the current state once if a result was held back."""
        self._views_suspended = suspended
        if suspended:
            self.ui.playButton.setProperty("checked", False)  # set_playing stops the timer and says Play
        elif self._withheld:
            self._withheld = False
            self.render_now()

    def _shown_what(self, s: PanelState) -> str:
        """What a volume is, briefly, for the status line: seed(s) and psi, then whatever else moved it away from
        what `cowgan generate --seeds` makes of that seed (other noise, style mixing, direction sliders)."""
        if s.projection:
            parts = ["projection"]
        elif s.interpolate:
            parts = [f"t = {s.t:.2f} between seeds {s.seed} and {s.seed_b}", f"psi {s.psi:.2f}"]
        else:
            parts = [f"seed {s.seed}", f"psi {s.psi:.2f}"]
        if not s.projection and s.noise() != s.seed:
            parts.append(f"noise seed {s.noise()}")
        if s.mixing:
            parts.append(f"mixed with seed {s.mix_seed} from block {s.crossover}"
                         + (f" at psi {PROJECTION_PSI:.0f}" if s.projection else ""))
        labels = [d.label for d in self.engine.directions] if self.engine is not None else []
        moved = [(label, amount) for label, amount in zip(labels, s.directions) if amount]
        if len(moved) > 2:
            parts.append(f"{len(moved)} directions moved")
        parts += [f"{label} {amount:+.1f} SD" for label, amount in moved if len(moved) <= 2]
        return ", ".join(parts)

    # ----------------------------------------------------------------------------------------------------
    # Interpolation playback
    def set_playing(self, playing: bool) -> None:
        self.ui.playButton.setProperty("text", "Pause" if playing else "Play")
        if playing and not self.state.interpolate:
            self.ui.interpolationCheckBox.setProperty("checked", True)
        (self._player.start if playing else self._player.stop)()

    def _play_step(self) -> None:
        if not self.worker.idle:
            return  # wait for the frame being generated: playback never queues up work
        direction = getattr(self, "_play_direction", 1)
        t = self.state.t + direction * PLAY_STEP
        if not 0.0 <= t <= 1.0:
            self._play_direction = -direction
            t = min(max(t, 0.0), 1.0)
        self.ui.interpolationSlider.setProperty("value", int(round(t * 100)))
        self.render_now()

    # ----------------------------------------------------------------------------------------------------
    # Export
    def browse_output(self, *args: Any) -> None:
        folder = self.choose_folder()
        if folder:
            self.ui.outputFolderLineEdit.setProperty("text", folder)
            self._notify_state()

    def export_volume(self, *args: Any) -> None:
        if self.engine is None or self._loading():
            return
        state, engine = self.state, self.engine
        self._busy_message(f"Exporting {engine.stem(state)} to {state.output_dir}...")
        self.worker.submit("export", lambda progress: _describe(engine.export_volume(state, state.output_dir)))
        self._poll.start()

    def export_interpolation(self, *args: Any) -> None:
        if self.engine is None or self._loading():
            return
        state, engine = self.state, self.engine
        self._busy_message(f"Exporting {state.frames} interpolation frames to {state.output_dir}...")
        self.worker.submit("export", lambda progress: _describe(engine.export_interpolation(state, state.output_dir, progress)))
        self._poll.start()

    # ----------------------------------------------------------------------------------------------------
    # Status, progress and errors
    def _status(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.setProperty("text", text)
        self.ui.statusLabel.setStyleSheet("color: #c62828;" if error else "")

    def _busy_message(self, text: str) -> None:
        self._status(text)
        self.ui.progressBar.setRange(0, 0)
        self.ui.progressBar.setVisible(True)

    def _progress(self, i: int, n: int) -> None:
        self.ui.progressBar.setRange(0, n)
        self.ui.progressBar.setValue(i)

    def _keep_note(self, text: str, error: bool = False) -> None:
        """Keep `text` in the status line of the renders requested so far, whose status would otherwise replace it."""
        self._note = (text, self.requests, error)

    def _done(self, text: str = "") -> None:
        self.ui.progressBar.setVisible(False)
        if text:
            self._status(text)

    def _report_error(self, error: BaseException, dialog: bool = True) -> None:
        """One message in the status line; at most one dialog open at a time, never a stack."""
        self._done()
        message = str(error) if isinstance(error, CoWGANError) else f"{type(error).__name__}: {error}"
        self.last_error = message
        self._status(f"Error: {message}", error=True)
        if dialog and self._show_error is not None and not self._error_open:
            self._error_open = True
            try:
                self._show_error(message)
            finally:
                self._error_open = False

    # ----------------------------------------------------------------------------------------------------
    def wait_idle(self, timeout_s: float = 30.0, app: Any = None) -> bool:
        """Process results until nothing is pending (tests, benchmarks, screenshots)."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if app is not None:
                app.processEvents()
            if self._debounce.isActive():
                time.sleep(0.002)
                continue
            self._drain()
            if self.worker.idle and self.worker.results.empty():
                return True
            time.sleep(0.002)
        return False

    def close(self) -> None:
        """Stop the timers and the worker; a running projection stops at its next step, having written nothing (in a
        long-lived host such as Slicer it would otherwise compute on and write files after the panel closed)."""
        self._cancel_projection = self._projecting
        self._withheld = False  # a rating ended after this (the module closing) must not start a render
        for timer in (self._debounce, self._poll, self._player):
            timer.stop()
        self.worker.stop()


def _describe(paths: Dict[str, Any]) -> str:
    files = [p for v in paths.values() for p in (v if isinstance(v, list) else [v])]
    folder = files[0].parent if files else ""
    return f"{len(files)} files to {folder}: " + ", ".join(sorted({p.name for p in files})[:4]) + ("..." if len(files) > 4 else "")


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


class ProjectionCancelled(CoWGANError):
    """The user pressed Cancel projection: raised from the projection's progress callback on the worker."""


def _default_output_dir() -> str:
    from pathlib import Path

    return str(Path.home() / "CircleOfWillisGAN")
