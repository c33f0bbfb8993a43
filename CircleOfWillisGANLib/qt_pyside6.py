"""PySide6 glue for the explorer and the tests: a `qt` namespace shaped like PythonQt's, and .ui loading.

3D Slicer passes its own `qt` module and loads .ui files with slicer.util.loadUI; nothing here runs inside Slicer.
"""

from __future__ import annotations

import types
from typing import Any, Tuple


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
