"""PySide6 glue for the explorer and the tests: a `qt` namespace shaped like PythonQt's, and .ui loading.

3D Slicer passes its own `qt` module and loads .ui files with slicer.util.loadUI; nothing here runs inside Slicer.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from typing import Any, Tuple

from .errors import InputError, MissingDependencyError, require

BROKEN_PYSIDE6 = ("6.12.0",)  # leaks references to None (Python < 3.12 aborts with "deallocating None")


def qapplication(name: str = "cowgan") -> Any:
    """The running QApplication, or a new one; on Linux without a display, an InputError rather than Qt's abort."""
    require("PySide6", "The window", "PySide6-Essentials")
    import PySide6
    from PySide6.QtWidgets import QApplication

    if PySide6.__version__ in BROKEN_PYSIDE6 and sys.version_info < (3, 12):
        raise MissingDependencyError(
            f"PySide6 {PySide6.__version__} loses a reference to None on every Qt call that returns nothing, which "
            "crashes Python before 3.12 after a few thousand clicks: run `pip install 'PySide6-Essentials!=6.12.0'`")

    app = QApplication.instance()
    if app is None and sys.platform.startswith("linux") and not any(
            os.environ.get(variable) for variable in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        raise InputError("there is no display to open the window on (DISPLAY is not set): run it in a desktop session "
                         "or over `ssh -X`, or on a virtual display, e.g. `xvfb-run -a cowgan explore --screenshot "
                         "view.png` (Qt's offscreen platform gives VTK no OpenGL, so its views would stay black)")
    return app or QApplication([name])


def run_event_loop(app: Any) -> int:
    """Run Qt's event loop until the windows close. Ctrl-C or SIGTERM close them as the user would (their close
    handlers run) and end the loop with status 130 or 143: Qt's loop alone never lets Python see those signals, so
    the window ignored them."""
    from PySide6.QtCore import QTimer

    def close_windows(signum: int, frame: Any) -> None:
        app.closeAllWindows()
        app.exit(128 + signum)

    wake = QTimer()
    wake.timeout.connect(lambda: None)  # returns to Python now and then, so that its signal handlers run
    wake.start(200)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, close_windows)
    try:
        return int(app.exec())
    finally:
        wake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pyside6_qt() -> types.SimpleNamespace:
    """PySide6's QtCore, QtGui and QtWidgets as one namespace, shaped like PythonQt's `qt` module."""
    from PySide6 import QtCore, QtGui, QtWidgets

    ns = types.SimpleNamespace()
    for module in (QtCore, QtGui, QtWidgets):
        for name in dir(module):
            if name.startswith("Q") or name == "Qt":
                setattr(ns, name, getattr(module, name))
    return ns


def load_panel_pyside6(ui_path: str, parent: Any = None) -> Tuple[Any, types.SimpleNamespace]:
    """Load the panel's .ui with PySide6's QUiLoader: (root widget, widgets by object name)."""
    from PySide6.QtCore import QFile, QObject
    from PySide6.QtUiTools import QUiLoader

    file = QFile(str(ui_path))
    if not file.open(QFile.ReadOnly):
        raise FileNotFoundError(f"cannot open the panel layout {ui_path}")
    root = QUiLoader().load(file, parent)
    file.close()
    widgets = {w.objectName(): w for w in root.findChildren(QObject) if w.objectName()}
    return root, types.SimpleNamespace(**widgets)
