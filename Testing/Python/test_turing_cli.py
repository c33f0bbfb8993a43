"""`cowgan turing create | status | report` end to end, and its one-line user errors."""

from __future__ import annotations

from CircleOfWillisGANLib.turing import TuringSession
from CircleOfWillisGANLib.turing.create import read_key
from cowgan.main import main
from turing_data import make_sources


def test_create_status_rate_report_from_the_command_line(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    (tmp_path / "private").mkdir()
    key = tmp_path / "private" / "key.json"
    assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
                 "--cases", "10", "--real-fraction", "randomised", "--display", "mip", "--seed", "4",
                 "--raters", "r1,r2", "--key", str(key)]) == 0
    assert "created 10 cases" in capsys.readouterr().out
    truth = read_key(key)[1]
    s = TuringSession.open(tmp_path / "s", "r1")
    while (case := s.next_case()) is not None:
        s.answer(case.case_id, truth[case.case_id], 5)
    s.close()
    assert main(["turing", "status", str(tmp_path / "s")]) == 0
    status = capsys.readouterr().out
    assert "r1: 10 of 10 answered" in status and "r2: not started" in status
    assert main(["turing", "report", str(tmp_path / "s"), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "r1: accuracy 100.0% (10/10" in out and (tmp_path / "s-report" / "report.html").is_file()


def test_report_without_the_key_is_a_one_line_error(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    TuringSession.create(tmp_path / "s", real, generated, n_cases=4, key_path=None)
    (tmp_path / "s" / "answer_key.json").rename(tmp_path / "key.json")
    assert main(["turing", "report", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cowgan: error: answer key") and "--key" in err and err.count("\n") == 1


def test_create_needs_exactly_one_generated_source(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    assert main(["turing", "create", "--real", str(real), "--out", str(tmp_path / "s")]) == 2
    assert "exactly one of --generated DIR or --model MODEL" in capsys.readouterr().err


def test_damaged_session_and_key_files_are_one_line_errors(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    TuringSession.create(tmp_path / "s", real, generated, n_cases=4)
    session_file, key_file = tmp_path / "s" / "session.json", tmp_path / "s" / "answer_key.json"
    good_session, good_key = session_file.read_text(), key_file.read_text()
    for damaged in ("[1, 2]", good_session.replace('"cases"', '"kases"')):
        session_file.write_text(damaged)
        for action in ("status", "report"):
            assert main(["turing", action, str(tmp_path / "s")]) == 2
            err = capsys.readouterr().err
            assert err.startswith("cowgan: error:") and "session.json" in err and err.count("\n") == 1
    session_file.write_text(good_session)
    for damaged in ("[]", good_key.replace('"truth"', '"trut"')):
        key_file.write_text(damaged)
        assert main(["turing", "report", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cowgan: error:") and "answer_key.json" in err and err.count("\n") == 1


def test_rate_refuses_a_folder_that_is_no_session_or_an_unknown_rater_before_opening_a_window(tmp_path, capsys):
    assert main(["turing", "rate", str(tmp_path), "--rater", "r1"]) == 2
    assert "is not a Turing test session" in capsys.readouterr().err
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=10, raters=["r1"])
    assert main(["turing", "rate", str(created.folder), "--rater", "r2"]) == 2
    assert "rater id 'r2' is not one of this session's raters (r1)" in capsys.readouterr().err


def test_report_refuses_existing_report_files_until_overwrite_is_passed(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "summary.csv").write_text("the user's own summary")
    assert main(["turing", "report", str(created.folder), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err == (f"cowgan: error: {tmp_path / 'rep' / 'summary.csv'} already exists: choose a new --out, "
                   "or pass --overwrite to replace it\n")
    assert [p.name for p in (tmp_path / "rep").iterdir()] == ["summary.csv"]
    assert (tmp_path / "rep" / "summary.csv").read_text() == "the user's own summary"
    assert main(["turing", "report", str(created.folder)]) == 0
    capsys.readouterr()
    first = (tmp_path / "s-report" / "report.html").read_bytes()
    assert main(["turing", "report", str(created.folder)]) == 2
    err = capsys.readouterr().err
    assert "s-report/summary.csv and 3 more of this run's files already exist" in err and "--overwrite" in err
    s = TuringSession.open(created.folder, "r1")
    s.answer(s.next_case().case_id, "real", 3)
    s.close()
    assert main(["turing", "report", str(created.folder), "--overwrite"]) == 0
    assert "r1: accuracy" in capsys.readouterr().out
    assert (tmp_path / "s-report" / "report.html").read_bytes() != first


def test_create_refuses_model_options_given_with_a_generated_folder(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    source = ["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
              "--cases", "4"]
    for extra, message in ((["--psi", "0.5", "--seeds", "1-5", "--device", "cuda"],
                            "--seeds, --psi and --device only apply with --model: drop them, or pass --model instead "
                            "of --generated"),
                           (["--psi", "1"], "--psi only applies with --model: drop it, or pass --model instead of "
                                            "--generated")):
        assert main(source + extra) == 2
        assert capsys.readouterr().err == f"cowgan: error: {message}\n"
        assert not (tmp_path / "s").exists()
    assert main(source) == 0


def test_a_real_fraction_out_of_range_names_the_settings_that_work(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
                 "--real-fraction", "2"]) == 2
    assert capsys.readouterr().err == ("cowgan: error: real fraction 2.0 must lie strictly between 0 and 1 (0.5, the "
                                       "default, for 50:50), or be 'randomised' for a share drawn within 40-60%\n")
    assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
                 "--cases", "10"]) == 0
    assert "(5 real, 5 generated)" in capsys.readouterr().out


def test_a_real_volume_without_a_usable_affine_is_one_line_naming_it(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    real, generated = make_sources(tmp_path)
    image = nib.Nifti1Image(np.ones((32, 32, 8), np.float32), None)
    image.header["sform_code"] = 2
    image.header["srow_x"] = [np.nan] * 4
    nib.save(image, str(real / "nan.nii.gz"))
    assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
                 "--cases", "4"]) == 2
    err = capsys.readouterr().err
    assert "nan.nii.gz has an affine that is all zero, not finite" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_session_or_key_inside_a_source_folder_is_refused_and_nothing_is_written_there(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    before = {p: sorted(p.rglob("*")) for p in (real, generated)}
    for extra, flag, name in (([], "--out", "real"), ([], "--out", "generated"),
                              (["--key", str(real / "key.json")], "--key", "real")):
        out = (real if (flag, name) == ("--out", "real") else generated if name == "generated" else tmp_path) / "s"
        assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(out),
                     "--cases", "4", *extra]) == 2
        err = capsys.readouterr().err
        assert f"is the --{name} folder or inside it" in err and err.startswith(f"cowgan: error: {flag} ")
        assert err.count("\n") == 1 and {p: sorted(p.rglob("*")) for p in (real, generated)} == before


def test_an_unusable_session_folder_or_key_is_refused_before_any_source_is_read(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    real, generated = make_sources(tmp_path)
    nib.save(nib.Nifti1Image(np.full((32, 32, 8), np.nan, np.float32), np.eye(4)), str(real / "broken.nii.gz"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("the organiser's notes")
    for extra in (["--generated", str(generated), "--out", str(generated / "s")],
                  ["--generated", str(generated), "--out", str(taken)],
                  ["--model", str(tmp_path / "not-yet-exported.safetensors"), "--out", str(taken)],
                  ["--generated", str(generated), "--out", str(tmp_path / "s"), "--key", str(taken / "notes.txt")]):
        assert main(["turing", "create", "--real", str(real), "--cases", "4", *extra]) == 2
        err = capsys.readouterr().err
        assert "broken.nii.gz" not in err and "not-yet-exported" not in err, err
        assert ("is the --generated folder" in err or "is not an empty folder" in err or "already exists" in err), err
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"] and not (generated / "s").exists()


def test_a_rater_list_naming_no_id_is_refused_not_opened_to_any_rater(tmp_path, capsys):
    real, generated = make_sources(tmp_path)
    assert main(["turing", "create", "--real", str(real), "--generated", str(generated), "--out", str(tmp_path / "s"),
                 "--cases", "4", "--raters", ", ,,"]) == 2
    err = capsys.readouterr().err
    assert "--raters ', ,,' names no rater id" in err and "give none at all" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()
