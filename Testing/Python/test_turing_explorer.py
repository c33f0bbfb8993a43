"""The visual Turing test from the explorer's menu, under PySide6 offscreen: rater and organiser windows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("PySide6")

from CircleOfWillisGANLib.explorer.turing_windows import TuringWindows  # noqa: E402
from CircleOfWillisGANLib.turing import TuringSession  # noqa: E402
from cowgan.main import main  # noqa: E402
from turing_data import make_sources  # noqa: E402


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.fixture()
def host(app):
    """A main window standing in for the explorer's, with the model it has loaded."""
    from PySide6.QtWidgets import QMainWindow

    window = QMainWindow()
    engine = SimpleNamespace(generator=SimpleNamespace(source="/models/cow.safetensors"))
    windows = TuringWindows(window, lambda: engine)
    yield windows, engine
    windows.close()


@pytest.fixture()
def session(tmp_path):
    real, generated = make_sources(tmp_path, n_real=3, n_generated=3)
    return TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=2, display="all")


def test_the_menu_offers_rating_and_organising(host):
    windows, _ = host
    assert windows.menu.title() == "Visual &Turing test"
    assert [a.text() for a in windows.menu.actions()] == ["Rate a session...", "Create a session or compute its results..."]


def test_the_menu_opens_an_empty_rater_window(host):
    windows, _ = host
    windows.rate_action.trigger()
    (window, controller), = windows.raters
    assert window.windowTitle() == "Visual Turing test" and window.isVisible()
    assert controller.session is None and controller.ui.sessionFolderLineEdit.text() == ""


def test_a_rater_window_with_a_session_and_an_id_starts_at_the_first_case(host, session):
    windows, _ = host
    _, controller = windows.open_rater(str(session.folder), "reader01", start=True)
    assert controller.ui.progressLabel.text() == "Case 1 of 4"
    assert controller.viewer.picture is not None


def test_the_explorer_is_hidden_while_a_rater_session_is_open_so_the_rater_cannot_generate(host, session):
    windows, _ = host
    windows.parent.show()
    window, controller = windows.open_rater(str(session.folder), "reader01", start=True)
    assert window.isVisible() and not windows.parent.isVisible()
    controller.close()
    assert windows.parent.isVisible()


def test_closing_the_explorer_releases_the_rater_journal(host, session):
    windows, _ = host
    _, controller = windows.open_rater(str(session.folder), "reader01", start=True)
    windows.close()
    assert controller.session is None and windows.raters == []
    TuringSession.open(session.folder, "reader01").close()


def test_the_organiser_generates_with_the_explorers_model_while_its_name_is_in_the_field(host, tmp_path):
    windows, engine = host
    windows.organise_action.trigger()
    (window, controller), = windows.organisers
    assert window.windowTitle() == "Visual Turing test: organiser" and window.isVisible()
    ui = controller.ui
    assert ui.modelLineEdit.text() == "/models/cow.safetensors"
    ui.sessionFolderLineEdit.setText(str(tmp_path / "s"))
    ui.realFolderLineEdit.setText(str(tmp_path / "real"))
    assert controller.settings()["model"] is engine.generator
    ui.modelLineEdit.setText("demo")
    assert controller.settings()["model"] == "demo"


def test_explore_refuses_a_rater_id_without_a_session(capsys):
    assert main(["explore", "--rater", "reader01"]) == 2
    assert "--rater needs --turing SESSION" in capsys.readouterr().err


def test_explore_refuses_options_the_rater_window_would_ignore(tmp_path, capsys):
    assert main(["explore", "--turing", str(tmp_path), "--screenshot", str(tmp_path / "t.png"), "--seed", "3"]) == 2
    assert "--seed, --screenshot would be ignored with --turing" in capsys.readouterr().err


def test_explore_names_a_missing_session_or_a_rater_it_does_not_admit_before_opening_a_window(tmp_path, capsys):
    assert main(["explore", "--turing", str(tmp_path / "nothere"), "--rater", "reader01"]) == 2
    assert "is not a Turing test session (no session.json)" in capsys.readouterr().err
    real, generated = make_sources(tmp_path)
    TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=1, display="mip", raters=["reader01"])
    assert main(["explore", "--turing", str(tmp_path / "s"), "--rater", "reader02"]) == 2
    assert "rater id 'reader02' is not one of this session's raters (reader01)" in capsys.readouterr().err


def test_explore_with_a_session_opens_only_the_rater_window(tmp_path, monkeypatch):
    import CircleOfWillisGANLib.explorer.window as explorer_window
    import CircleOfWillisGANLib.turing.rater_app as rater_app

    real, generated = make_sources(tmp_path, n_real=3, n_generated=3)
    TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=1, display="mip", raters=["reader01"])
    opened = []
    monkeypatch.setattr(rater_app, "run_rater_app", lambda session, rater, start=True: opened.append((session, rater, start)) or 0)
    monkeypatch.setattr(explorer_window, "build_window", lambda **kwargs: pytest.fail("the explorer window was built"))
    assert main(["explore", "--turing", str(tmp_path / "s"), "--rater", "reader01"]) == 0
    assert main(["explore", "--turing", str(tmp_path / "s")]) == 0
    assert opened == [(str(tmp_path / "s"), "reader01", True), (str(tmp_path / "s"), "", False)]
