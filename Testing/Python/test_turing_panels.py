"""The rater and organiser panels under PySide6 offscreen, driven through their widgets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from CircleOfWillisGANLib.errors import InputError  # noqa: E402
from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt  # noqa: E402
from CircleOfWillisGANLib.turing import TuringSession  # noqa: E402
from CircleOfWillisGANLib.turing.create import read_key  # noqa: E402
from CircleOfWillisGANLib.turing.organiser_panel import OrganiserPanelController  # noqa: E402
from CircleOfWillisGANLib.turing.rater_panel import RaterPanelController  # noqa: E402
from turing_data import disk_full_after, make_sources  # noqa: E402

UI = Path(__file__).resolve().parents[2] / "Resources" / "UI"


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


class RecordingViewer:
    """Stands in for Slicer's views: remembers what it was asked to show."""

    def __init__(self):
        self.shown, self.hidden, self.closed = [], 0, 0

    def show_case(self, path, display):
        self.shown.append((Path(path), display))

    def hide_case(self):
        self.hidden += 1

    def close(self):
        self.closed += 1


def _rater_panel(app, folder, rater, viewer):
    root, ui = load_panel_pyside6(str(UI / "TuringRater.ui"))
    controller = RaterPanelController(ui, pyside6_qt(), viewer)
    ui.sessionFolderLineEdit.setText(str(folder))
    ui.raterIdLineEdit.setText(rater)
    return root, ui, controller


def _answer(ui, call, confidence, comment=""):
    getattr(ui, f"{call}RadioButton").click()
    getattr(ui, f"confidence{confidence}RadioButton").click()
    ui.commentTextEdit.setPlainText(comment)
    ui.submitButton.click()


@pytest.fixture()
def session(tmp_path):
    real, generated = make_sources(tmp_path)
    return TuringSession.create(tmp_path / "s", real, generated, n_cases=6, seed=3, display="mip")


def test_closing_a_rater_session_unlocks_the_start_fields_and_start_resumes_it(app, session):
    root, ui, controller = _rater_panel(app, session.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    assert not ui.startButton.isEnabled()  # pressing it again would restart the case's clock
    _answer(ui, "real", 4)
    controller.close()  # what Slicer's scene close does
    assert ui.sessionFolderLineEdit.isEnabled() and ui.raterIdLineEdit.isEnabled() and ui.startButton.isEnabled()
    assert not ui.caseGroupBox.isEnabled() and "Press Start to resume" in ui.statusLabel.property("text")
    ui.startButton.click()
    assert ui.progressLabel.property("text") == "Case 2 of 6" and ui.caseGroupBox.isEnabled()
    assert ui.statusLabel.property("text") == "Resumed: 1 answer was already saved."
    controller.close()


def test_rater_panel_runs_a_whole_session_and_saves_every_answer(app, session):
    viewer = RecordingViewer()
    root, ui, controller = _rater_panel(app, session.folder, "reader01", viewer)
    ui.startButton.click()
    assert ui.progressLabel.property("text") == "Case 1 of 6"
    assert not ui.submitButton.isEnabled()
    closed_while_rating = viewer.closed
    for k in range(6):
        assert viewer.shown[-1][1] == "mip" and viewer.shown[-1][0].parent.name == "cases"
        _answer(ui, "real" if k % 2 else "fake", 1 + k % 5, f"comment {k}")
    assert ui.progressLabel.property("text") == "All 6 cases answered"
    assert "Thank you" in ui.statusLabel.property("text")
    assert viewer.closed == closed_while_rating + 1  # the last answer gives the host's views back
    controller.close()
    saved = TuringSession.open(session.folder, "reader01")
    assert len(saved.answers) == 6 and {a.comment for a in saved.answers.values()} == {f"comment {k}" for k in range(6)}
    saved.close()


def test_rater_panel_needs_a_call_and_a_confidence_before_saving(app, session):
    root, ui, controller = _rater_panel(app, session.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    ui.fakeRadioButton.click()
    assert not ui.submitButton.isEnabled()
    ui.confidence3RadioButton.click()
    assert ui.submitButton.isEnabled()
    controller.close()


def test_rater_panel_resumes_where_the_rater_stopped(app, session):
    viewer = RecordingViewer()
    root, ui, controller = _rater_panel(app, session.folder, "reader01", viewer)
    ui.startButton.click()
    _answer(ui, "real", 2)
    _answer(ui, "fake", 4)
    controller.close()
    root2, ui2, controller2 = _rater_panel(app, session.folder, "reader01", viewer)
    ui2.startButton.click()
    assert ui2.progressLabel.property("text") == "Case 3 of 6"
    assert "Resumed: 2 answers" in ui2.statusLabel.property("text")
    assert not ui2.realRadioButton.property("checked") and not ui2.fakeRadioButton.property("checked")
    controller2.close()


def test_rater_panel_reports_a_wrong_rater_id_without_opening(app, tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, raters=["reader01"])
    root, ui, controller = _rater_panel(app, created.folder, "intruder", RecordingViewer())
    ui.startButton.click()
    assert "not one of this session's raters" in ui.statusLabel.property("text")
    assert not ui.caseGroupBox.isEnabled()


def test_time_limit_hides_the_case_and_still_takes_the_answer(app, tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=0.2)
    viewer = RecordingViewer()
    root, ui, controller = _rater_panel(app, created.folder, "reader01", viewer)
    ui.startButton.click()
    assert ui.timeLabel.property("text").startswith("Time left")
    deadline = time.monotonic() + 3
    while viewer.hidden == 0 and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    assert viewer.hidden == 1 and "Time is up" in ui.timeLabel.property("text")
    _answer(ui, "real", 3)
    controller.close()
    assert next(iter(TuringSession.open(created.folder, "reader01").answers.values())).over_limit


def test_back_button_only_in_sessions_that_allow_it(app, tmp_path, session):
    root, ui, controller = _rater_panel(app, session.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    assert ui.backButton.isHidden()
    controller.close()
    real, generated = make_sources(tmp_path / "b")
    created = TuringSession.create(tmp_path / "b" / "s", real, generated, n_cases=4, allow_back=True)
    root, ui, controller = _rater_panel(app, created.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    assert not ui.backButton.isHidden() and not ui.backButton.isEnabled()
    _answer(ui, "real", 2, "first")
    ui.backButton.click()
    assert ui.progressLabel.property("text") == "Case 1 of 4"
    assert ui.realRadioButton.property("checked") and ui.confidence2RadioButton.property("checked")
    assert ui.commentTextEdit.property("plainText") == "first"
    controller.close()


def test_every_answer_stays_revisable_after_the_last_case_is_saved_when_going_back_is_allowed(app, tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, allow_back=True)
    root, ui, controller = _rater_panel(app, created.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    for k in range(4):
        _answer(ui, "real", 2, f"answer {k + 1}")
    assert "All cases are answered and saved" in ui.statusLabel.property("text")
    assert ui.backButton.isEnabled() and not ui.submitButton.isEnabled()
    ui.backButton.click()
    assert ui.progressLabel.property("text") == "Case 4 of 4"
    assert ui.commentTextEdit.property("plainText") == "answer 4"
    _answer(ui, "fake", 5, "revised")
    controller.close()
    answers = TuringSession.open(created.folder, "reader01").answers
    assert sorted((a.call, a.comment) for a in answers.values()) == [("fake", "revised")] + [("real", "answer 1"),
                                                                                              ("real", "answer 2"),
                                                                                              ("real", "answer 3")]
    real2, generated2 = make_sources(tmp_path / "n")
    strict = TuringSession.create(tmp_path / "n" / "s", real2, generated2, n_cases=2)
    root, ui, controller = _rater_panel(app, strict.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    for _ in range(2):
        _answer(ui, "real", 2)
    assert not ui.backButton.isEnabled() and "revise" not in ui.statusLabel.property("text")
    controller.close()


def test_organiser_panel_creates_a_session_and_computes_results(app, tmp_path):
    real, generated = make_sources(tmp_path)
    root, ui = load_panel_pyside6(str(UI / "TuringOrganiser.ui"))
    opened = []
    controller = OrganiserPanelController(ui, pyside6_qt(), open_path=opened.append)
    ui.realFolderLineEdit.setText(str(real))
    ui.generatedSourceComboBox.setCurrentIndex(1)
    assert not ui.seedsLineEdit.isEnabled() and ui.generatedFolderLineEdit.isEnabled()
    ui.generatedFolderLineEdit.setText(str(generated))
    ui.casesSpinBox.setValue(8)
    ui.realShareComboBox.setCurrentIndex(1)
    ui.displayComboBox.setCurrentIndex(2)
    ui.timeLimitSpinBox.setValue(30)
    ui.allowBackCheckBox.setChecked(True)
    ui.seedSpinBox.setValue(11)
    ui.sessionFolderLineEdit.setText(str(tmp_path / "s"))
    for blank in ("", "  "):
        ui.ratersLineEdit.setText(blank)
        assert controller.settings()["raters"] == []  # any rater
    ui.ratersLineEdit.setText(" ,;,")
    with pytest.raises(InputError, match="the raters field ',;,' names no rater id"):
        controller.settings()
    ui.ratersLineEdit.setText("reader01, reader02")
    settings = controller.settings()
    assert settings["real_fraction"] == "randomised" and settings["display"] == "slices"
    assert settings["time_limit"] == 30 and settings["allow_back"] and settings["raters"] == ["reader01", "reader02"]
    ui.createButton.click()
    assert controller.created is not None and "Created 8 cases" in ui.statusLabel.property("text")
    assert ui.createProgressBar.property("value") == 8
    truth = read_key(controller.created.key_path)[1]
    s = TuringSession.open(tmp_path / "s", "reader01")
    while (case := s.next_case()) is not None:
        s.answer(case.case_id, truth[case.case_id], 4)
    s.close()
    ui.reportButton.click()
    assert "reader01: accuracy 100.0% (8/8" in ui.resultsTextEdit.property("plainText")
    ui.openReportButton.click()
    assert opened and opened[0].name == "report.html"


def test_organiser_panel_replaces_an_earlier_report_only_after_naming_it(app, tmp_path):
    from CircleOfWillisGANLib.turing import report

    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4)
    _, paths = report(created.folder)
    earlier = paths["summary"].read_bytes()
    s = TuringSession.open(created.folder, "reader01")
    s.answer(s.next_case().case_id, "real", 3)
    s.close()
    root, ui = load_panel_pyside6(str(UI / "TuringOrganiser.ui"))
    controller = OrganiserPanelController(ui, pyside6_qt())
    ui.sessionFolderLineEdit.setText(str(created.folder))
    ui.reportButton.click()
    assert ui.statusLabel.property("text") == (
        f"No results written: {tmp_path / 's-report'} already holds a report (summary.csv, readings.csv, cases.csv, "
        "report.html). Press Compute results again to replace it, or move it away first.")
    assert paths["summary"].read_bytes() == earlier and controller.result is None
    ui.reportButton.click()
    assert ui.statusLabel.property("text") == f"Results written to {tmp_path / 's-report'}"
    assert "reader01" in paths["summary"].read_text()
    ui.reportButton.click()  # the panel's own report is replaced at once as readings come in
    assert ui.statusLabel.property("text") == f"Results written to {tmp_path / 's-report'}"
    assert ui.openReportButton.isEnabled() and "reader01" in ui.resultsTextEdit.toPlainText()
    ui.sessionFolderLineEdit.setText(str(tmp_path))  # not a session: its error must not sit beside s's results
    ui.reportButton.click()
    assert ui.statusLabel.property("text").startswith("No results:")
    assert not ui.openReportButton.isEnabled() and ui.resultsTextEdit.toPlainText() == "" and not controller.report_paths


def test_organiser_panel_shows_errors_in_the_status_line(app, tmp_path):
    root, ui = load_panel_pyside6(str(UI / "TuringOrganiser.ui"))
    _controller = OrganiserPanelController(ui, pyside6_qt())  # holds the panel's connections while it is used
    ui.sessionFolderLineEdit.setText(str(tmp_path / "s"))
    ui.realFolderLineEdit.setText(str(tmp_path / "missing"))
    ui.modelLineEdit.setText("demo")
    ui.createButton.click()
    assert ui.statusLabel.property("text").startswith("Session not created:")


def test_standalone_viewer_draws_every_display_mode(app, session):
    from CircleOfWillisGANLib.turing.picture_viewer import PictureViewer

    viewer = PictureViewer(pyside6_qt())
    path = session.folder / "cases" / "case-001.nii"
    widths = {}
    for display in ("mip", "slices", "surface", "all"):
        viewer.show_case(path, display)
        assert viewer.picture is not None and viewer.picture.dtype == np.uint8 and viewer.picture.max() > 0
        widths[display] = viewer.picture.shape[1]
    assert widths["all"] > max(widths["mip"], widths["slices"], widths["surface"])
    viewer.show_case(path, "mip")
    shown = viewer.image_label.pixmap()
    assert viewer.zoom > 1 and shown.width() == round(viewer.picture.shape[1] * viewer.zoom)
    assert shown.width() <= max(600, viewer.image_label.width()) and shown.height() <= max(300, viewer.image_label.height())
    viewer.hide_case()
    assert viewer.picture is None


def test_a_thin_level_vessel_is_drawn_evenly_on_the_surface_picture_not_as_dots_shaded_by_the_background():
    import numpy as np

    from CircleOfWillisGANLib.turing.pictures import surface_picture

    volume = np.full((8, 32, 32), 20, np.uint8)
    volume[5, 16, 4:28] = 250  # one voxel wide, at one depth, along W
    volume[3, 2:12, 8] = 250   # another at another depth, along H
    picture = surface_picture(volume, scale=1)
    levels, counts = np.unique(picture[picture > 0], return_counts=True)
    assert sorted(counts.tolist()) == [10, 24] and levels.min() > 100


def test_the_first_case_is_refitted_once_the_window_is_laid_out_so_every_case_is_drawn_at_one_size(app, session):
    from CircleOfWillisGANLib.turing.rater_app import build_rater_window

    window, controller, viewer = build_rater_window(str(session.folder), "reader01")
    window.resize(1300, 650)
    window.show()
    controller.start()  # shown before the layout has given the view its size

    def settled_zoom():
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        return viewer.zoom

    first = settled_zoom()
    _answer(controller.ui, "real", 3)
    assert settled_zoom() == first
    window.resize(900, 500)
    assert settled_zoom() < first
    controller.close()
    window.close()


class FakeFileDialog:
    """Qt's QFileDialog answering like PySide6 ((path, filter)) or PythonQt (the path); records each request."""

    def __init__(self, answer, pythonqt):
        self.answer, self.pythonqt, self.asked = answer, pythonqt, []

    def _reply(self, kind, parent, title, *rest):
        self.asked.append((kind, parent, title, rest[-1] if kind != "folder" else None))
        return self.answer if self.pythonqt or kind == "folder" else (self.answer, "")

    def getOpenFileName(self, parent, title, start, name_filter):
        return self._reply("open", parent, title, start, name_filter)

    def getSaveFileName(self, parent, title, start, name_filter):
        return self._reply("save", parent, title, start, name_filter)

    def getExistingDirectory(self, parent, title, start):
        return self._reply("folder", parent, title, start)


def _qt_with_dialog(dialog):
    qt = pyside6_qt()
    qt.QFileDialog = dialog
    return qt


@pytest.mark.parametrize("pythonqt", [False, True])
def test_turing_panels_browse_with_qt_dialogs_unless_the_host_passes_its_own(app, tmp_path, pythonqt):
    chosen = str(tmp_path / "chosen")
    dialog = FakeFileDialog(chosen, pythonqt)
    parent = object()
    _, ui = load_panel_pyside6(str(UI / "TuringOrganiser.ui"))
    OrganiserPanelController(ui, _qt_with_dialog(dialog), parent=parent)
    for field in ("realFolder", "generatedFolder", "sessionFolder", "model", "keyPath"):
        getattr(ui, f"{field}LineEdit").setText("")
    ui.generatedSourceComboBox.setCurrentIndex(1)
    ui.generatedFolderBrowseButton.click()
    ui.generatedSourceComboBox.setCurrentIndex(0)
    ui.keyPathBrowseButton.click()
    ui.modelBrowseButton.click()
    assert ui.generatedFolderLineEdit.property("text") == chosen
    assert ui.keyPathLineEdit.property("text") == chosen and ui.modelLineEdit.property("text") == chosen
    assert [(kind, p) for kind, p, _, _ in dialog.asked] == [("folder", parent), ("save", parent), ("open", parent)]
    assert "*.json" in dialog.asked[1][3] and "*.safetensors" in dialog.asked[2][3]

    _, rater_ui = load_panel_pyside6(str(UI / "TuringRater.ui"))
    rater = RaterPanelController(rater_ui, _qt_with_dialog(dialog), RecordingViewer(), parent=parent)
    rater_ui.sessionFolderBrowseButton.click()
    assert rater_ui.sessionFolderLineEdit.property("text") == chosen and dialog.asked[-1][:2] == ("folder", parent)
    rater.close()

    cancelled = FakeFileDialog("", pythonqt)
    _, ui = load_panel_pyside6(str(UI / "TuringOrganiser.ui"))
    OrganiserPanelController(ui, _qt_with_dialog(cancelled), choose_file=lambda field: f"host-{field}")
    ui.sessionFolderLineEdit.setText("kept")
    ui.sessionFolderBrowseButton.click()
    ui.keyPathBrowseButton.click()
    assert ui.sessionFolderLineEdit.property("text") == "kept", "a cancelled dialog keeps the field"
    assert ui.keyPathLineEdit.property("text") == "host-keyPath"


def _journalled_cases(folder, rater):
    from CircleOfWillisGANLib.turing.journal import read_journal

    return {r.get("case") for r in read_journal(Path(folder) / "journal" / f"{rater}.jsonl").records}


def test_a_case_file_that_fails_to_load_blanks_the_view_takes_no_answer_and_start_retries_it(app, session):
    from CircleOfWillisGANLib.turing.rater_app import build_rater_window

    window, controller, viewer = build_rater_window(str(session.folder), "reader01")
    ui = controller.ui
    ui.startButton.click()
    assert viewer.picture is not None
    second = controller.session.order[1]
    path = session.folder / "cases" / f"{second}.nii"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # cut short by an interrupted sync while the rater works
    _answer(ui, "real", 3)
    assert viewer.picture is None, "the previous case's picture must not stay on screen"
    assert not ui.submitButton.isEnabled() and not ui.caseGroupBox.isEnabled() and ui.startButton.isEnabled()
    status = ui.statusLabel.property("text")
    assert f"case file {second}.nii is damaged" in status and "ask the organiser to restore it" in status
    assert "\n" not in status and second not in _journalled_cases(session.folder, "reader01")
    path.write_bytes(whole)
    ui.startButton.click()
    assert controller.case.case_id == second and viewer.picture is not None
    assert ui.progressLabel.property("text") == "Case 2 of 6"
    controller.close()
    window.close()


class FailingViewer(RecordingViewer):
    """A host viewer that cannot load one file (as Slicer's loadVolume raises for a file it cannot read)."""

    def __init__(self, failing):
        super().__init__()
        self.failing = failing

    def show_case(self, path, display):
        if Path(path).name == self.failing:
            raise RuntimeError(f"Failed to load volume {path}")
        super().show_case(path, display)


def test_a_case_the_host_viewer_cannot_load_is_named_and_neither_journalled_nor_answerable(app, session):
    order = TuringSession.open(session.folder, "reader01")
    second = order.order[1]
    order.close()
    viewer = FailingViewer(f"{second}.nii")
    root, ui, controller = _rater_panel(app, session.folder, "reader01", viewer)
    ui.startButton.click()
    _answer(ui, "fake", 2)
    status = ui.statusLabel.property("text")
    assert status.startswith(f"case file {second}.nii could not be shown (Failed to load volume")
    assert "ask the organiser to restore it" in status and controller.session is None and controller.case is None
    assert not ui.submitButton.isEnabled() and viewer.closed >= 1
    assert second not in _journalled_cases(session.folder, "reader01")


def test_an_answer_the_full_disk_refused_says_not_saved_and_saving_again_keeps_it(app, session):
    root, ui, controller = _rater_panel(app, session.folder, "reader01", RecordingViewer())
    ui.startButton.click()
    journal = session.folder / "journal" / "reader01.jsonl"
    with disk_full_after(journal, 40):
        _answer(ui, "fake", 4, "a comment long enough not to fit")
    status = ui.statusLabel.property("text")
    assert status.startswith("The answer was NOT saved: cannot write the journal") and "free disk space" in status
    assert ui.progressLabel.property("text") == "Case 1 of 6" and ui.submitButton.isEnabled()
    ui.submitButton.click()
    assert ui.statusLabel.property("text") == "Answer saved." and ui.progressLabel.property("text") == "Case 2 of 6"
    with disk_full_after(journal, 0):
        controller.close()  # the last case's time cannot be journalled; the journal is released all the same
    assert "The time on the last case was not saved: cannot write the journal" in ui.statusLabel.property("text")
    saved = TuringSession.open(session.folder, "reader01")
    assert saved.problems == [] and [a.comment for a in saved.answers.values()] == ["a comment long enough not to fit"]
    saved.close()
