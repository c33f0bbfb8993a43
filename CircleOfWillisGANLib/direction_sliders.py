"""The panel's latent-direction sliders: one labelled row per direction of the loaded model, built at run time.

Like the panel controller it receives the Qt namespace and never imports a Qt binding. A slider's value is in
standard deviations of w, STEPS ticks per standard deviation, from -RANGE to +RANGE.
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

from .directions import Direction

STEPS = 10  # ticks per standard deviation
RANGE = 3  # standard deviations either side


def direction_tip(direction: Direction) -> str:
    """A slider's tooltip: what it moves, which way, over which style blocks."""
    blocks = f"style blocks {', '.join(map(str, direction.layers))}; 1 step = 1 standard deviation of w"
    if direction.method == "named":
        return (f"{direction.label}: towards + the model draws the variant, towards - it leaves it out (a line fitted "
                f"in W to a variant classifier's calls); {blocks}")
    return f"{direction.method.upper()} direction, applied to {blocks}"


class DirectionSliders:
    """Rows of (name, slider, value) in a grid layout; rebuilt whenever a model is loaded."""

    def __init__(self, qt: Any, layout: Any) -> None:
        self.qt, self.layout = qt, layout
        self.sliders: List[Any] = []
        self.names: List[Any] = []
        self._value_labels: List[Any] = []
        self._widgets: List[Any] = []

    def build(self, directions: Sequence[Direction], changed: Callable[[], None], released: Callable[[], None]) -> None:
        """Replace the rows with one per direction; `changed` runs on every move, `released` when a drag ends."""
        qt = self.qt
        for widget in self._widgets:
            self.layout.removeWidget(widget)
            widget.setParent(None)
            widget.deleteLater()
        self._widgets, self.sliders, self.names, self._value_labels = [], [], [], []
        for row, direction in enumerate(directions):
            name = qt.QLabel(direction.label)
            name.setToolTip(direction_tip(direction))
            slider = qt.QSlider()
            slider.setOrientation(qt.Qt.Horizontal)
            slider.setObjectName(f"directionSlider{row + 1}")
            slider.setRange(-RANGE * STEPS, RANGE * STEPS)
            slider.setPageStep(STEPS)
            value = qt.QLabel("+0.0")
            slider.valueChanged.connect(lambda *args: changed())
            slider.sliderReleased.connect(released)
            for col, widget in enumerate((name, slider, value)):
                self.layout.addWidget(widget, row, col)
                self._widgets.append(widget)
            self.sliders.append(slider)
            self.names.append(name)
            self._value_labels.append(value)

    def amounts(self) -> List[float]:
        """Each slider's value in standard deviations."""
        return [int(s.property("value")) / STEPS for s in self.sliders]

    def set_amounts(self, amounts: Sequence[float]) -> None:
        """Move the sliders to `amounts`; sliders beyond its length go to 0."""
        amounts = list(amounts) + [0.0] * max(0, len(self.sliders) - len(amounts))
        for slider, amount in zip(self.sliders, amounts):
            slider.setProperty("value", int(round(amount * STEPS)))

    def show_values(self) -> None:
        """Write each slider's value beside it."""
        for label, amount in zip(self._value_labels, self.amounts()):
            label.setProperty("text", f"{amount:+.1f}")
