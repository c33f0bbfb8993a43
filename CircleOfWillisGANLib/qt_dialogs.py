"""The panels' default file dialogs and "open with the desktop", alike under PySide6 and PythonQt.

Controllers receive the Qt namespace, so these take it too; none imports a Qt binding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

MODEL_FILTER = "Models (*.safetensors *.pt);;All files (*)"
SCAN_OR_PROJECTION_FILTER = ("Scans (NIfTI, NRRD) or saved projections (*.nii *.nii.gz *.nrrd *.nhdr *.safetensors);;"
                             "All files (*)")
JSON_FILTER = "JSON (*.json);;All files (*)"


def dialog_path(value: Any) -> str:
    """The chosen path, "" when cancelled: PySide6's file dialogs return (path, filter), PythonQt's the path."""
    if isinstance(value, (tuple, list)):
        value = value[0] if value else ""
    return str(value or "")


def open_file(qt: Any, title: str, name_filter: str, start: str = "", parent: Any = None) -> str:
    """Ask for an existing file."""
    return dialog_path(qt.QFileDialog.getOpenFileName(parent, title, start, name_filter))


def save_file(qt: Any, title: str, name_filter: str, start: str = "", parent: Any = None) -> str:
    """Ask for a file to write (the dialog asks before replacing one)."""
    return dialog_path(qt.QFileDialog.getSaveFileName(parent, title, start, name_filter))


def choose_folder(qt: Any, title: str, start: str = "", parent: Any = None) -> str:
    """Ask for a folder."""
    return dialog_path(qt.QFileDialog.getExistingDirectory(parent, title, start))


def open_with_desktop(qt: Any, path: Union[str, Path]) -> None:
    """Open a file (a report, a picture) in the program the desktop uses for it."""
    qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))
