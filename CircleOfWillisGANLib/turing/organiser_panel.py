"""Controller of Resources/UI/TuringOrganiser.ui: design and create a session, then compute its results.

Like the rater panel it receives the Qt namespace and the .ui's widgets by object name, and never imports a
Qt binding. It opens Qt's file dialogs and the desktop's browser unless the host passes its own, and hosts pass a
`process_events` callable so that the progress bar moves while cases are generated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .. import qt_dialogs
from ..errors import CoWGANError, InputError
from ..latents import parse_seeds
from .config import parse_rater_ids
from .create import CreatedSession
from .report import TuringReport, existing_report_files, report_dir, summary_text
from .session import TuringSession, report

log = logging.getLogger(__name__)
DISPLAY_BY_INDEX = ("all", "mip", "slices", "surface")
GENERATED_FROM = ("model", "folder")


class OrganiserPanelController:
    """Reads the organiser panel into `TuringSession.create` arguments and shows the results summary."""

    def __init__(self, ui: Any, qt: Any, parent: Any = None, choose_folder: Optional[Callable[[str], str]] = None,
                 choose_file: Optional[Callable[[str], str]] = None, open_path: Optional[Callable[[Path], None]] = None,
                 process_events: Optional[Callable[[], None]] = None, generator: Any = None) -> None:
        self.ui, self.qt = ui, qt
        self.created: Optional[CreatedSession] = None
        self.result: Optional[TuringReport] = None
        self.report_paths: Dict[str, Path] = {}
        self._replaceable_report: Optional[Path] = None  # a report folder this panel wrote, or named as holding one
        self._choose_folder = choose_folder or (
            lambda field: qt_dialogs.choose_folder(qt, "Choose a folder", parent=parent))
        self._choose_file = choose_file or (lambda field: self._file_dialog(field, parent))
        self._open_path = open_path or (lambda path: qt_dialogs.open_with_desktop(qt, path))
        self._process_events = process_events
        self._generator = generator
        self._generator_label: Optional[str] = None
        for field in ("realFolder", "generatedFolder", "sessionFolder"):
            getattr(ui, f"{field}BrowseButton").clicked.connect(lambda *_, f=field: self._browse_folder(f))
        for field in ("model", "keyPath"):
            getattr(ui, f"{field}BrowseButton").clicked.connect(lambda *_, f=field: self._browse_file(f))
        ui.generatedSourceComboBox.currentIndexChanged.connect(self._update_source_fields)
        ui.createButton.clicked.connect(self.create)
        ui.reportButton.clicked.connect(self.compute_report)
        ui.openReportButton.clicked.connect(self.open_report)
        self._update_source_fields()

    def _text(self, name: str) -> str:
        return str(getattr(self.ui, name).property("text") or "").strip()

    def _browse_folder(self, field: str) -> None:
        chosen = self._choose_folder(field)
        if chosen:
            getattr(self.ui, f"{field}LineEdit").setText(chosen)

    def _browse_file(self, field: str) -> None:
        chosen = self._choose_file(field)
        if chosen:
            getattr(self.ui, f"{field}LineEdit").setText(chosen)

    def _file_dialog(self, field: str, parent: Any) -> str:
        if field == "keyPath":
            return qt_dialogs.save_file(self.qt, "Answer key", qt_dialogs.JSON_FILTER, parent=parent)
        return qt_dialogs.open_file(self.qt, "Model", qt_dialogs.MODEL_FILTER, parent=parent)

    def _update_source_fields(self, *_: Any) -> None:
        from_model = self.generated_from() == "model"
        for name in ("modelLineEdit", "modelBrowseButton", "seedsLineEdit", "psiSpinBox"):
            getattr(self.ui, name).setEnabled(from_model)
        for name in ("generatedFolderLineEdit", "generatedFolderBrowseButton"):
            getattr(self.ui, name).setEnabled(not from_model)

    def use_generator(self, generator: Any, label: str) -> None:
        """Generate with a model the host has loaded, shown as `label` in the model field; typing another
        model there uses that one instead."""
        self._generator, self._generator_label = generator, label
        self.ui.modelLineEdit.setText(label)

    def generated_from(self) -> str:
        """'model' or 'folder', as chosen in the panel."""
        return GENERATED_FROM[int(self.ui.generatedSourceComboBox.property("currentIndex"))]

    def raters(self) -> List[str]:
        """Rater ids from the comma-separated field (empty: any id)."""
        return parse_rater_ids(self._text("ratersLineEdit"), "the raters field")

    def settings(self) -> Dict[str, Any]:
        """The panel as keyword arguments of `TuringSession.create`."""
        folder, real = self._text("sessionFolderLineEdit"), self._text("realFolderLineEdit")
        if not folder:
            raise InputError("no session folder: choose a new, empty folder to share with the raters")
        if not real:
            raise InputError("no real volumes folder: choose the folder of real .nii/.nii.gz volumes")
        kwargs: Dict[str, Any] = {
            "folder": folder, "real": real, "n_cases": int(self.ui.casesSpinBox.property("value")),
            "real_fraction": 0.5 if int(self.ui.realShareComboBox.property("currentIndex")) == 0 else "randomised",
            "display": DISPLAY_BY_INDEX[int(self.ui.displayComboBox.property("currentIndex"))],
            "time_limit": int(self.ui.timeLimitSpinBox.property("value")) or None,
            "allow_back": bool(self.ui.allowBackCheckBox.property("checked")),
            "seed": int(self.ui.seedSpinBox.property("value")), "raters": self.raters(),
            "key_path": self._text("keyPathLineEdit") or None}
        if self.generated_from() == "model":
            typed = self._text("modelLineEdit")
            loaded = self._generator if self._generator_label in (None, typed) else None
            kwargs.update(model=loaded or typed or "demo",
                          seeds=parse_seeds(self._text("seedsLineEdit") or "1-100"),
                          psi=float(self.ui.psiSpinBox.property("value")))
        else:
            generated = self._text("generatedFolderLineEdit")
            if not generated:
                raise InputError("no generated volumes folder: choose one, or generate from a model")
            kwargs["generated"] = generated
        return kwargs

    def _progress(self, done: int, total: int) -> None:
        self.ui.createProgressBar.setMaximum(total)
        self.ui.createProgressBar.setValue(done)
        if self._process_events:
            self._process_events()

    def create(self) -> bool:
        """Create the session the panel describes; report the outcome in the status line."""
        self.ui.createButton.setEnabled(False)
        try:
            self.created = TuringSession.create(progress=self._progress, **self.settings())
        except CoWGANError as exc:
            self.ui.statusLabel.setText(f"Session not created: {exc}")
            return False
        finally:
            self.ui.createButton.setEnabled(True)
        c = self.created
        self.ui.statusLabel.setText(
            f"Created {c.n_cases} cases in {c.folder}. Share that folder with the raters; the answer key is "
            f"{c.key_path}{' (inside the shared folder: move it elsewhere if raters can browse it)' if c.key_path.parent == c.folder else ''}.")
        return True

    def compute_report(self) -> bool:
        """Join the rater journals with the key, write CSV + HTML and show a summary. Earlier results are cleared
        first: shown beside a refusal or an error, they would pass for this folder's."""
        self.result, self.report_paths = None, {}
        self.ui.resultsTextEdit.setPlainText("")
        self.ui.openReportButton.setEnabled(False)
        folder = self._text("sessionFolderLineEdit")
        if not folder:
            self.ui.statusLabel.setText("Choose the session folder first.")
            return False
        try:
            target = report_dir(folder)
            earlier = existing_report_files(target)
            if earlier and target != self._replaceable_report:
                self._replaceable_report = target  # the organiser has been told; the next press replaces it
                self.ui.statusLabel.setText(
                    f"No results written: {target} already holds a report ({', '.join(earlier)}). Press Compute "
                    "results again to replace it, or move it away first.")
                return False
            self.result, self.report_paths = report(folder, self._text("keyPathLineEdit") or None, overwrite=True)
        except CoWGANError as exc:
            self.ui.statusLabel.setText(f"No results: {exc}")
            return False
        self._replaceable_report = target
        self.ui.resultsTextEdit.setPlainText(summary_text(self.result))
        self.ui.openReportButton.setEnabled(True)
        self.ui.statusLabel.setText(f"Results written to {self.report_paths['html'].parent}")
        return True

    def open_report(self) -> None:
        """Open the HTML report with the host's viewer (the desktop's browser unless the host passed one)."""
        if "html" in self.report_paths:
            self._open_path(self.report_paths["html"])
