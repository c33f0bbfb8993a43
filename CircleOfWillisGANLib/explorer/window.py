"""The standalone explorer: the Slicer panel's .ui and controller in a PySide6 window beside a VTK view.

For users without 3D Slicer, and the end-to-end test of the panel: `cowgan explore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import require
from ..panel_controller import PanelController
from ..qt_pyside6 import load_panel_pyside6, pyside6_qt, qapplication
from ..panel_engine import PanelEngine, RenderResult
from ..resources import ui_path
from .turing_windows import TuringWindows
from .view import VolumeScene

UI_FILE = "CircleOfWillisGAN.ui"


def panel_ui_path() -> Path:
    """The panel's .ui file, in a checkout, an installed extension or a pip install."""
    return ui_path(UI_FILE)


def _vtk_widget_class() -> Any:
    require("vtk", "The explorer's 3D view", "vtk")
    import vtkmodules.qt

    vtkmodules.qt.PyQtImpl = "PySide6"
    from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor

    return QVTKRenderWindowInteractor


def build_window(engine: Optional[PanelEngine] = None, model: str = "demo", device: str = "cpu",
                 then: Optional[Callable[[PanelEngine], None]] = None,
                 show_error: Optional[Callable[[str], None]] = None) -> "Any":
    """Create (but do not show) the explorer window; with `engine` it is used, else `model` is loaded; `then` runs once
    that model is in. Errors open a dialog, or go to `show_error` (when no one is at the screen)."""
    from PySide6 import QtCore, QtWidgets

    app = qapplication("cowgan explore")

    class ExplorerWindow(QtWidgets.QMainWindow):
        """Panel on the left, five VTK viewports on the right, and the visual Turing test's menu."""

        def __init__(self) -> None:
            super().__init__()
            self.setWindowTitle("CircleOfWillisGAN explorer")
            self.panel, self.ui = load_panel_pyside6(str(panel_ui_path()))
            scroll = QtWidgets.QScrollArea()
            scroll.setWidget(self.panel)
            scroll.setWidgetResizable(True)
            scroll.setMinimumWidth(self.panel.sizeHint().width() + 24)
            self.vtk_widget = _vtk_widget_class()(self)
            splitter = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
            splitter.addWidget(scroll)
            splitter.addWidget(self.vtk_widget)
            splitter.setStretchFactor(1, 1)
            self.setCentralWidget(splitter)
            self.statusBar().addWidget(self.ui.statusLabel, 1)  # errors and progress stay in sight, not below the fold
            self.statusBar().addPermanentWidget(self.ui.progressBar)
            self.scene = VolumeScene(self.vtk_widget.GetRenderWindow())
            self.controller = PanelController(self.ui, pyside6_qt(), show_error=show_error or self._error_dialog)
            self.controller.views.append(self.show_result)
            self.turing = TuringWindows(self, lambda: self.controller.engine)
            self.resize(1400, 900)

        def _error_dialog(self, message: str) -> None:
            QtWidgets.QMessageBox.warning(self, "CircleOfWillisGAN", message)

        def show_result(self, result: RenderResult) -> None:
            self.scene.update(result.volume, result.affine, result.surface)
            self.scene.render()

        def screenshot(self) -> np.ndarray:
            """The whole window as RGB: the Qt widgets, with the VTK view's pixels painted in."""
            app.processEvents()
            self.scene.render()
            image = self.grab().toImage().convertToFormat(self.grab().toImage().Format.Format_RGB888)
            width, height = image.width(), image.height()
            data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
            rows = data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()
            view = self.scene.screenshot()
            ratio = self.devicePixelRatioF()
            top_left = self.vtk_widget.mapTo(self, QtCore.QPoint(0, 0))
            x, y = int(top_left.x() * ratio), int(top_left.y() * ratio)
            h, w = min(view.shape[0], height - y), min(view.shape[1], width - x)
            rows[y: y + h, x: x + w] = view[:h, :w]
            return rows

        def closeEvent(self, event: Any) -> None:
            self.turing.close()
            self.controller.close()
            self.vtk_widget.Finalize()
            super().closeEvent(event)

    window = ExplorerWindow()
    if engine is not None:
        window.controller.set_engine(engine, then=then)
    else:
        window.controller.load_model(model, device=device, quiet=True, then=then)
    return window
