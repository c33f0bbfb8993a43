"""Controller of Resources/UI/TuringRater.ui: one case at a time, answers saved before the next case shows.

It runs under PySide6 (`cowgan turing rate`, the tests) and PythonQt (3D Slicer): it receives the Qt namespace
and the .ui's widgets by object name and never imports a Qt binding. Showing a case is the host's job, through
a viewer with `show_case(path, display)` (raising if it cannot load the file), `hide_case()` (blank during the
session, e.g. at the time limit) and `close()` (blank, and give back whatever showing cases changed in the host's
views); every string it puts on screen comes from here and is built from the neutral session files only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, List, Optional

from .. import qt_dialogs
from ..errors import CoWGANError
from .rater import Case, RaterSession
from .session import TuringSession

log = logging.getLogger(__name__)
TICK_MS = 250
CONFIDENCE_BUTTONS = tuple(f"confidence{i}RadioButton" for i in range(1, 6))


class RaterPanelController:
    """Binds the rater panel to a RaterSession and a case viewer."""

    def __init__(self, ui: Any, qt: Any, viewer: Any, parent: Any = None,
                 choose_folder: Optional[Callable[[], str]] = None, open_session: Callable[[str, str], RaterSession] = TuringSession.open) -> None:
        self.ui, self.qt, self.viewer = ui, qt, viewer
        self.session: Optional[RaterSession] = None
        self.case: Optional[Case] = None
        self._choose_folder = choose_folder or (lambda: qt_dialogs.choose_folder(qt, "Session folder", parent=parent))
        self._open_session = open_session
        # called with True when a rater session opens and False when it ends or closes: hosts hide what a rater must
        # not use meanwhile (the generator of the model under test)
        self.rating_listeners: List[Callable[[bool], None]] = []
        self._hidden_for_time = False
        self.timer = qt.QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        ui.startButton.clicked.connect(self.start)
        ui.submitButton.clicked.connect(self.submit)
        ui.backButton.clicked.connect(self.back)
        ui.sessionFolderBrowseButton.clicked.connect(self._browse)
        for name in ("realRadioButton", "fakeRadioButton") + CONFIDENCE_BUTTONS:
            getattr(ui, name).toggled.connect(self._update_buttons)
        self._update_buttons()

    def _browse(self) -> None:
        folder = self._choose_folder()
        if folder:
            self.ui.sessionFolderLineEdit.setText(folder)

    def _status(self, text: str) -> None:
        self.ui.statusLabel.setText(text)

    def start(self) -> bool:
        """Open the session named in the panel as the rater named in the panel, and show the next case."""
        self.close()
        folder = str(self.ui.sessionFolderLineEdit.property("text") or "").strip()
        rater = str(self.ui.raterIdLineEdit.property("text") or "").strip()
        if not folder or not rater:
            self._status("Enter the session folder and your rater id, then press Start.")
            return False
        try:
            self.session = self._open_session(folder, rater)
        except CoWGANError as exc:
            self._status(str(exc))
            return False
        for name in ("sessionFolderLineEdit", "raterIdLineEdit", "sessionFolderBrowseButton", "startButton"):
            getattr(self.ui, name).setEnabled(False)
        for listener in self.rating_listeners:
            listener(True)
        self.ui.caseGroupBox.setEnabled(True)
        self.ui.backButton.setVisible(self.session.allow_back)
        self.ui.progressBar.setMaximum(len(self.session.order))
        problems = self.session.problems
        saved = len(self.session.answers)
        self._status(f"Resumed: {saved} answer{'s were' if saved > 1 else ' was'} already saved." if saved
                     else "Session opened.")
        if problems:
            self._status(f"{len(problems)} damaged journal line(s) were skipped; the other answers are kept. "
                         "Tell the organiser.")
        return self._step(self.session.next_case)

    def _step(self, step: Callable[..., Optional[Case]]) -> bool:
        """Show the case that `step` (next_case or previous_case) puts on screen. A case that cannot be shown ends
        the session with its error, so the view is blank, nothing can be saved for it and Start retries it."""
        assert self.session is not None
        try:
            case = step(show=self.viewer.show_case)
        except CoWGANError as exc:
            if self.session.on_screen is not None:  # refused (no going back here): the case stays on screen
                self._status(str(exc))
                return False
            self.close()
            self._status(f"{exc}. Then press Start to go on.")
            return False
        self._show(case)
        return True

    def _show(self, case: Optional[Case]) -> None:
        assert self.session is not None
        self.case = case
        self._hidden_for_time = False
        self.timer.stop()
        progress = self.session.progress()
        self.ui.progressLabel.setText(progress.label[0].upper() + progress.label[1:])
        self.ui.progressBar.setValue(progress.answered)
        self._clear_answer()
        if case is None:
            self.viewer.close()
            for listener in self.rating_listeners:
                listener(False)
            self.ui.timeLabel.setText("")
            for name in ("callGroupBox", "confidenceGroupBox", "commentTextEdit", "submitButton"):
                getattr(self.ui, name).setEnabled(False)
            revisable = bool(self.session.allow_back) and progress.total > 0  # every answer stays open to revision
            self.ui.backButton.setEnabled(revisable)
            self._status("All cases are answered and saved. Thank you!"
                         + (" You may still go back to revise an answer." if revisable else ""))
            return
        if case.previous is not None:
            getattr(self.ui, f"{case.previous.call}RadioButton").setChecked(True)
            getattr(self.ui, CONFIDENCE_BUTTONS[case.previous.confidence - 1]).setChecked(True)
            self.ui.commentTextEdit.setPlainText(case.previous.comment)
        if case.time_limit_s is not None:
            self.timer.start()
        self._tick()
        self._update_buttons()

    def _clear_answer(self) -> None:
        for name in ("realRadioButton", "fakeRadioButton") + CONFIDENCE_BUTTONS:
            button = getattr(self.ui, name)
            button.setAutoExclusive(False)
            button.setChecked(False)
            button.setAutoExclusive(True)
        self.ui.commentTextEdit.setPlainText("")
        for name in ("callGroupBox", "confidenceGroupBox", "commentTextEdit"):
            getattr(self.ui, name).setEnabled(True)

    def _call(self) -> Optional[str]:
        if self.ui.realRadioButton.property("checked"):
            return "real"
        if self.ui.fakeRadioButton.property("checked"):
            return "fake"
        return None

    def _confidence(self) -> Optional[int]:
        for level, name in enumerate(CONFIDENCE_BUTTONS, start=1):
            if getattr(self.ui, name).property("checked"):
                return level
        return None

    def _update_buttons(self, *_: Any) -> None:
        ready = self.case is not None and self._call() is not None and self._confidence() is not None
        self.ui.submitButton.setEnabled(ready)
        can_back = self.session is not None and self.session.allow_back and self.case is not None and self.case.number > 1
        self.ui.backButton.setEnabled(bool(can_back))

    def _tick(self) -> None:
        left = self.session.time_left_s() if self.session is not None and self.case is not None else None
        if left is None:
            self.ui.timeLabel.setText("")
            return
        if left > 0:
            self.ui.timeLabel.setText(f"Time left: {int(left + 0.999)} s")
            return
        self.ui.timeLabel.setText("Time is up: the case is hidden. Please give your answer.")
        if not self._hidden_for_time:
            self._hidden_for_time = True
            self.viewer.hide_case()
            self.timer.stop()

    def submit(self) -> bool:
        """Save the answer on screen (on disk when this returns), then show the next case."""
        if self.session is None or self.case is None:
            return False
        call, confidence = self._call(), self._confidence()
        if call is None or confidence is None:
            self._status("Choose Real or Generated and a confidence from 1 to 5, then save.")
            return False
        try:
            self.session.answer(self.case.case_id, call, confidence, str(self.ui.commentTextEdit.property("plainText") or ""))
        except CoWGANError as exc:
            self._status(f"The answer was NOT saved: {exc}")
            return False
        self._status("Answer saved.")
        return self._step(self.session.next_case)

    def back(self) -> bool:
        """Show the previous case with its saved answer, when the session allows going back."""
        if self.session is None:
            return False
        return self._step(self.session.previous_case)

    def close(self) -> None:
        """Stop the timer, release the rater's journal (every answer is already saved) and give the panel back its
        start fields, so that Start resumes the session (e.g. after Slicer closed the scene)."""
        self.timer.stop()
        was_open, unsaved = self.session is not None, ""
        if was_open:
            try:
                self.session.close()
            except CoWGANError as exc:  # only how long the case on screen was seen is lost
                unsaved = f" (The time on the last case was not saved: {exc}.)"
            self.session = None
            for listener in self.rating_listeners:
                listener(False)
        self.case = None
        self.viewer.close()
        for name in ("sessionFolderLineEdit", "raterIdLineEdit", "sessionFolderBrowseButton", "startButton"):
            getattr(self.ui, name).setEnabled(True)
        self.ui.caseGroupBox.setEnabled(False)
        if was_open:
            self._status(f"Session closed; every answer given is saved. Press Start to resume it.{unsaved}")

    def visible_texts(self) -> list:
        """Every text the panel shows now (labels, buttons, tooltips, window titles), for leak checks."""
        texts = []
        for widget in vars(self.ui).values():
            for prop in ("text", "title", "toolTip", "windowTitle", "plainText", "placeholderText", "currentText",
                         "suffix", "prefix", "specialValueText"):
                value = widget.property(prop)
                if isinstance(value, str) and value:
                    texts.append(value)
        return texts


def default_ui_path() -> Path:
    """Where TuringRater.ui lives in a checkout or an installed extension."""
    from ..resources import ui_path

    return ui_path("TuringRater.ui")
