"""No key leakage: nothing a rater can see (files, headers, names, JSON, sizes, times, panel text) tells a real
case from a generated one, and the rater-side code never opens the answer key."""

from __future__ import annotations

import builtins
import io
import json
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import pytest

from CircleOfWillisGANLib.turing import TuringSession
from CircleOfWillisGANLib.turing.create import read_key
from CircleOfWillisGANLib.turing.status import session_status
from turing_data import make_sources

SECRETS = ("real_src", "generated_src", "real_subject", "fake_seed", "scanner", "seed", "psi", "truth", "source",
           "answer_key", "label", "tiny", "random")
SESSION_KEYS = {"format", "version", "cases", "display", "time_limit_s", "allow_back", "raters", "grid",
                "session_id", "order_per_session"}  # session_id: a digest of the case files


@pytest.fixture()
def session(tmp_path, tiny_generator):
    real, generated = make_sources(tmp_path)
    folder_session = TuringSession.create(tmp_path / "from_folder", real, generated, n_cases=12, seed=8,
                                          real_fraction="randomised", raters=["reader01"])
    model_session = TuringSession.create(tmp_path / "from_model", real, model=tiny_generator, seeds=range(40, 60),
                                         psi=0.7, n_cases=8, seed=8)
    return folder_session, model_session


def _rater_visible_files(folder: Path):
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "answer_key.json"]


def _rate_everything(folder: Path, rater: str) -> None:
    s = TuringSession.open(folder, rater)
    while (case := s.next_case()) is not None:
        s.answer(case.case_id, "real", 3, "looks plausible")
    s.close()


@pytest.mark.parametrize("which", [0, 1])
def test_no_rater_visible_file_name_or_content_mentions_a_source(session, which):
    created = session[which]
    _rate_everything(created.folder, "reader01")
    for path in _rater_visible_files(created.folder):
        name = path.relative_to(created.folder).as_posix().lower()
        data = path.read_bytes().lower()
        for secret in SECRETS:
            assert secret not in name, f"{secret!r} in file name {name}"
            assert secret.encode() not in data, f"{secret!r} inside {name}"
    for line in session_status(created.folder):
        assert not any(s in line.lower() for s in SECRETS)


def test_session_description_holds_only_shared_settings(session):
    description = json.loads((session[0].folder / "session.json").read_text())
    assert set(description) == SESSION_KEYS
    assert description["cases"] == sorted(description["cases"])
    assert "n_real" not in json.dumps(description) and "fraction" not in json.dumps(description)


@pytest.mark.parametrize("which", [0, 1])
def test_case_files_are_indistinguishable_except_for_their_voxels(session, which):
    created = session[which]
    files = sorted((created.folder / "cases").iterdir())
    assert [f.name for f in files] == [f"case-{k:03d}.nii" for k in range(1, len(files) + 1)]
    assert len({f.read_bytes()[:352] for f in files}) == 1
    assert len({f.stat().st_size for f in files}) == 1
    assert len({f.stat().st_mtime_ns for f in files + [created.folder / "session.json"]}) == 1
    header = nib.load(str(files[0])).header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        assert bytes(header[field]).strip(b"\x00 ") == b""


def test_rater_side_code_never_opens_the_answer_key(session, monkeypatch):
    created = session[0]
    opened = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(opener):
        def wrapped(file, *args, **kwargs):
            opened.append(str(file))
            return opener(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    _rate_everything(created.folder, "reader01")
    session_status(created.folder)
    monkeypatch.undo()
    assert opened, "the spy saw no file access"
    assert not [p for p in opened if "answer_key" in p]


def test_rater_panel_text_does_not_vary_with_the_truth(session, tmp_path):
    pytest.importorskip("PySide6")
    from PySide6.QtWidgets import QApplication

    from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt
    from CircleOfWillisGANLib.turing.rater_panel import RaterPanelController, default_ui_path

    app = QApplication.instance() or QApplication([])
    created = session[0]
    truth = read_key(created.key_path)[1]

    class Viewer:
        paths = []

        def show_case(self, path, display):
            self.paths.append(Path(path))

        def hide_case(self):
            pass

        def close(self):
            pass

    root, ui = load_panel_pyside6(str(default_ui_path()))
    controller = RaterPanelController(ui, pyside6_qt(), Viewer())
    ui.sessionFolderLineEdit.setText(str(created.folder))
    ui.raterIdLineEdit.setText("reader01")
    ui.startButton.click()
    texts_by_truth = {"real": [], "fake": []}
    while controller.case is not None:
        texts = controller.visible_texts()
        for text in texts:
            assert not any(s in text.lower() for s in SECRETS if s not in ("source",)), text
        steady = Counter(t for t in texts if not (t.startswith("Case ") or t.endswith("%"))
                         and t not in ("Answer saved.", "Session opened."))
        texts_by_truth[truth[controller.case.case_id]].append(steady)
        ui.fakeRadioButton.click()
        ui.confidence2RadioButton.click()
        ui.submitButton.click()
    assert texts_by_truth["real"] and texts_by_truth["fake"]
    all_variants = {frozenset(c.items()) for group in texts_by_truth.values() for c in group}
    assert len(all_variants) == 1, "panel text differs between cases"
    assert all(p.parent == created.folder / "cases" and p.name.startswith("case-") for p in Viewer.paths)
    controller.close()
    app.processEvents()
