"""The visual Turing test from the explorer: a menu that opens the rater window and an organiser window.

The rater window is the one `cowgan turing rate` opens; the organiser window holds the Slicer module's
organiser panel and generates with the model the explorer has loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Tuple

from ..qt_pyside6 import load_panel_pyside6, pyside6_qt
from ..resources import ui_path
from ..turing.organiser_panel import OrganiserPanelController
from ..turing.rater_app import build_rater_window
from ..turing.rater_panel import RaterPanelController

MENU_TITLE = "Visual &Turing test"
ORGANISER_UI = "TuringOrganiser.ui"


def organiser_ui_path() -> Path:
    """Where TuringOrganiser.ui lives in a checkout, an installed extension or a pip install."""
    return ui_path(ORGANISER_UI)


class TuringWindows:
    """Adds the Turing menu to an explorer window and keeps the windows it opens until `close`."""

    def __init__(self, parent: Any, engine_of: Callable[[], Any]) -> None:
        self.parent = parent
        self._engine_of = engine_of
        self.raters: List[Tuple[Any, RaterPanelController]] = []
        self.organisers: List[Tuple[Any, OrganiserPanelController]] = []
        self.menu = parent.menuBar().addMenu(MENU_TITLE)
        self.rate_action = self.menu.addAction("Rate a session...")
        self.rate_action.triggered.connect(lambda *_: self.open_rater())
        self.organise_action = self.menu.addAction("Create a session or compute its results...")
        self.organise_action.triggered.connect(lambda *_: self.open_organiser())

    def open_rater(self, session: str = "", rater: str = "", start: bool = False) -> Tuple[Any, RaterPanelController]:
        """Show a rater window with its fields filled in; with `start`, open the session at once."""
        window, controller, _ = build_rater_window(session, rater)
        window.resize(1300, 650)
        window.show()
        controller.rating_listeners.append(lambda rating: self.parent.setVisible(not rating))  # no generating meanwhile
        self.raters.append((window, controller))
        if start:
            controller.start()
        return window, controller

    def open_organiser(self) -> Tuple[Any, OrganiserPanelController]:
        """Show an organiser window that generates cases with the explorer's model while its name stays in the field."""
        qt = pyside6_qt()
        window = qt.QScrollArea()
        window.setWindowTitle("Visual Turing test: organiser")
        panel, ui = load_panel_pyside6(str(organiser_ui_path()))
        window.setWidget(panel)
        window.setWidgetResizable(True)
        window._turing_parts = (panel, ui)

        controller = OrganiserPanelController(ui, qt, parent=window, process_events=qt.QApplication.processEvents)
        engine = self._engine_of()
        if engine is not None:
            controller.use_generator(engine.generator, engine.generator.source or "demo")
        window.resize(panel.sizeHint().width() + 40, 800)
        window.show()
        self.organisers.append((window, controller))
        return window, controller

    def close(self) -> None:
        """Release every rater journal and close the windows."""
        for window, controller in self.raters:
            controller.rating_listeners.clear()  # the explorer is closing: it must not be shown again
            controller.close()
            window.close()
        for window, _ in self.organisers:
            window.close()
        self.raters, self.organisers = [], []

