"""The standalone rater window (`cowgan turing rate`): the picture viewer beside the rater panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple

from ..qt_pyside6 import load_panel_pyside6, pyside6_qt, qapplication, run_event_loop
from .picture_viewer import PictureViewer
from .rater_panel import RaterPanelController, default_ui_path


def build_rater_window(session: str = "", rater: str = "") -> Tuple[Any, RaterPanelController, PictureViewer]:
    """A window with the viewer and the rater panel, its fields filled in (needs a QApplication)."""
    qt = pyside6_qt()
    window = qt.QWidget()
    window.setWindowTitle("Visual Turing test")
    layout = qt.QHBoxLayout(window)
    viewer = PictureViewer(qt)
    panel, ui = load_panel_pyside6(str(default_ui_path()))
    layout.addWidget(viewer.widget, 3)
    layout.addWidget(panel, 1)

    controller = RaterPanelController(ui, qt, viewer, parent=window)
    ui.sessionFolderLineEdit.setText(str(Path(session).resolve()) if session else "")
    ui.raterIdLineEdit.setText(rater)
    window._turing_parts = (panel, ui)
    return window, controller, viewer


def run_rater_app(session: str, rater: str, start: bool = True) -> int:
    """Open the window, start or resume the session (with `start`; else the rater fills in the id and presses
    Start), and run until the window is closed."""
    app = qapplication("cowgan turing rate")
    window, controller, _ = build_rater_window(session, rater)
    window.resize(1300, 650)
    window.show()
    if start:
        controller.start()
    code = run_event_loop(app)
    controller.close()
    return int(code)
