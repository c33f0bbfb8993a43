"""The standalone rater's case viewer: one picture (MIPs, a slice, a surface) and a slice slider.

It takes the Qt namespace like the panel controllers, so it also runs under PythonQt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..volume_io import load_volume, spacing_of
from .pictures import case_picture


class PictureViewer:
    """Shows one case as a picture; `hide_case` and `close` blank it (time limit, end of session)."""

    def __init__(self, qt: Any) -> None:
        self.qt = qt
        self.widget = qt.QWidget()
        layout = qt.QVBoxLayout(self.widget)
        self.image_label = qt.QLabel()
        self.image_label.setMinimumSize(600, 300)
        # the picture is scaled to the label, so the label's size must not follow the picture's
        self.image_label.setSizePolicy(qt.QSizePolicy.Ignored, qt.QSizePolicy.Ignored)
        self.image_label.setAlignment(qt.Qt.AlignCenter)
        self.image_label.setStyleSheet("background: black")
        self.slice_slider = qt.QSlider(qt.Qt.Horizontal)
        self.slice_slider.setToolTip("Axial slice")
        self.slice_slider.valueChanged.connect(self._render)
        layout.addWidget(self.image_label, 1)
        layout.addWidget(self.slice_slider)
        self.volume: Optional[np.ndarray] = None
        self.spacing = (1.0, 1.0, 1.0)
        self.display = "all"
        self.picture: Optional[np.ndarray] = None
        self.zoom = 1.0
        self._buffer = b""
        self._drawn_for: Any = None  # the view size the picture was fitted to
        # the view's size settles after the window is laid out and changes when it is resized: refit when it does
        self._refit_timer = qt.QTimer()
        self._refit_timer.setInterval(200)
        self._refit_timer.timeout.connect(self._refit)

    def show_case(self, path: Path, display: str) -> None:
        """Load the case's display volume and draw it."""
        self.volume, affine = load_volume(path)
        self.spacing = spacing_of(affine)
        self.display = display
        self.slice_slider.setVisible(display in ("slices", "all"))
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, self.volume.shape[0] - 1)
        self.slice_slider.setValue(self.volume.shape[0] // 2)
        self.slice_slider.blockSignals(False)
        self._render()
        self._refit_timer.start()

    def hide_case(self) -> None:
        """Blank the view."""
        self._refit_timer.stop()
        self.volume = None
        self.picture = None
        self.image_label.clear()

    def close(self) -> None:
        """Blank the view; showing cases changed nothing else."""
        self.hide_case()

    def _render(self, *_: Any) -> None:
        if self.volume is None:
            return
        picture = case_picture(self.volume, self.display, int(self.slice_slider.property("value")), self.spacing)
        self.picture = np.ascontiguousarray(picture)
        self._buffer = self.picture.tobytes()
        h, w = self.picture.shape
        image = self.qt.QImage(self._buffer, w, h, w, self.qt.QImage.Format_Grayscale8)
        self.zoom = self._fit_zoom(w, h)
        pixmap = self.qt.QPixmap.fromImage(image)
        if self.zoom != 1.0:
            smooth = self.zoom < 2.0  # whole magnifications of 2 and more keep voxels as sharp squares
            pixmap = pixmap.scaled(round(w * self.zoom), round(h * self.zoom), self.qt.Qt.IgnoreAspectRatio,
                                   self.qt.Qt.SmoothTransformation if smooth else self.qt.Qt.FastTransformation)
        self.image_label.setPixmap(pixmap)

    def _view_size(self) -> tuple:
        size, least = self.image_label.size, self.image_label.minimumSize
        size, least = (size() if callable(size) else size), (least() if callable(least) else least)
        return max(size.width(), least.width()), max(size.height(), least.height())

    def _refit(self) -> None:
        if self.volume is not None and self._view_size() != self._drawn_for:
            self._render()

    def _fit_zoom(self, width: int, height: int) -> float:
        """The magnification that fits the picture to the view: a whole number from 2 up, else exact. Every case of
        a session has one grid, so all are drawn at the same size (refitted when the view's size changes)."""
        room_w, room_h = self._drawn_for = self._view_size()
        fit = min(room_w / max(width, 1), room_h / max(height, 1))
        return float(int(fit)) if fit >= 2.0 else fit
