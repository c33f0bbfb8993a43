"""Reports: readings joined with the key give exactly the hand-counted statistics, in CSV and HTML."""

from __future__ import annotations

import csv

import pytest

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.turing import TuringSession, build_report, report
from CircleOfWillisGANLib.turing.report import summary_text
from CircleOfWillisGANLib.turing.create import read_key
from CircleOfWillisGANLib.turing.stats import binom_test, cohen_kappa, fleiss_kappa
from turing_data import disk_full_after, make_sources


@pytest.fixture()
def rated(tmp_path):
    """12 cases; 'oracle' answers all correctly with confidence 5, 'contrarian' all wrongly with confidence 1,
    'halfway' answers the first 6 cases of its order as 'fake' with confidence 3."""
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=4, raters=["oracle", "contrarian", "halfway"])
    truth = read_key(created.key_path)[1]
    flip = {"real": "fake", "fake": "real"}
    for rater, rule, n, conf in (("oracle", lambda t: t, 12, 5), ("contrarian", flip.get, 12, 1),
                                 ("halfway", lambda t: "fake", 6, 3)):
        s = TuringSession.open(created.folder, rater)
        for _ in range(n):
            case = s.next_case()
            s.answer(case.case_id, rule(truth[case.case_id]), conf)
        s.close()
    return created, truth


def test_per_rater_accuracy_sensitivity_and_specificity_are_exact(rated):
    created, truth = rated
    result = build_report(created.folder)
    by_name = {s.name: s for s in result.raters}
    assert (by_name["oracle"].accuracy.k, by_name["oracle"].accuracy.n) == (12, 12)
    assert by_name["oracle"].sensitivity.value == 1.0 and by_name["oracle"].specificity.value == 1.0
    assert by_name["contrarian"].accuracy.k == 0 and by_name["contrarian"].p_value == pytest.approx(binom_test(0, 12))
    halfway = [r for r in result.readings if r.rater == "halfway"]
    fakes = sum(r.truth == "fake" for r in halfway)
    assert by_name["halfway"].accuracy.k == fakes and by_name["halfway"].sensitivity.value == 1.0
    assert by_name["halfway"].specificity.k == 0


def test_a_rater_who_always_answers_generated_is_not_called_a_discriminator_when_the_session_is_not_50_50(tmp_path):
    real, generated = make_sources(tmp_path, n_real=10, n_generated=10)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=10, seed=1, real_fraction="randomised")
    truth = read_key(created.key_path)[1]
    n_fake = sum(t == "fake" for t in truth.values())
    assert n_fake != 5
    for rater in ("a", "b", "c"):
        s = TuringSession.open(created.folder, rater)
        for _ in range(10):
            s.answer(s.next_case().case_id, "fake", 3)
        s.close()
    pooled = build_report(created.folder).pooled
    assert pooled.accuracy.k == 3 * n_fake and pooled.called_fake.value == 1.0
    assert pooled.sensitivity.value == 1.0 and pooled.specificity.value == 0.0 and pooled.balanced_accuracy == 0.5
    assert pooled.discrimination_p == 1.0 and pooled.p_value < 1.0


def test_pooled_statistics_and_accuracy_by_confidence(rated):
    created, _ = rated
    result = build_report(created.folder)
    assert result.pooled.accuracy.n == 30
    assert result.pooled.by_confidence[5].value == 1.0 and result.pooled.by_confidence[1].value == 0.0
    assert result.pooled.by_confidence[2].n == 0


def test_fleiss_kappa_uses_only_cases_every_rater_answered(rated):
    created, truth = rated
    result = build_report(created.folder)
    method, value, n = result.agreement
    assert method == "Fleiss' kappa" and n == 6
    calls = {(r.rater, r.case_id): r.call for r in result.readings}
    common = sorted(c for c in truth if all((r, c) in calls for r in ("oracle", "contrarian", "halfway")))
    table = [[sum(calls[(r, c)] == k for r in ("oracle", "contrarian", "halfway")) for k in ("real", "fake")] for c in common]
    assert value == pytest.approx(fleiss_kappa(table))


def test_two_raters_get_cohens_kappa(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=8, seed=1)
    for rater, call in (("a", "real"), ("b", "fake")):
        s = TuringSession.open(created.folder, rater)
        for k in range(8):
            case = s.next_case()
            s.answer(case.case_id, call if k % 2 else "real", 3)
        s.close()
    result = build_report(created.folder)
    a = {r.case_id: r.call for r in result.readings if r.rater == "a"}
    b = {r.case_id: r.call for r in result.readings if r.rater == "b"}
    ids = sorted(a)
    assert result.agreement == ("Cohen's kappa", pytest.approx(cohen_kappa([a[i] for i in ids], [b[i] for i in ids])), 8)


def test_most_missed_cases_come_first(rated):
    created, _ = rated
    result = build_report(created.folder)
    fractions = [c.wrong / c.readings for c in result.cases]
    assert fractions == sorted(fractions, reverse=True)


def test_csv_and_html_are_written_beside_the_session_not_inside(rated):
    created, _ = rated
    result, paths = report(created.folder)
    assert all(p.parent == created.folder.parent / "s-report" for p in paths.values())
    rows = list(csv.DictReader(open(paths["summary"])))
    assert [r["rater"] for r in rows] == ["contrarian", "halfway", "oracle", "pooled"]
    assert rows[2]["accuracy"] == "1" and rows[3]["readings"] == "30"
    assert len(list(csv.DictReader(open(paths["readings"])))) == 30
    html = paths["html"].read_text()
    assert "<svg" in html and "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Fleiss" in html and "cannot be told from guessing" in html


def test_an_earlier_report_is_refused_and_replaced_whole_only_when_asked(rated):
    from CircleOfWillisGANLib.errors import OutputError

    created, _ = rated
    _, paths = report(created.folder)
    folder = paths["html"].parent
    (folder / "notes.txt").write_text("the organiser's own notes")
    earlier = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputError, match=r"s-report/summary.csv and 3 more of this run's files already exist: "
                                          r"choose a new --out, or pass --overwrite to replace them"):
        report(created.folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == earlier
    s = TuringSession.open(created.folder, "halfway")
    s.answer(s.next_case().case_id, "real", 2)
    s.close()
    limit = paths["summary"].stat().st_size + 3000  # room for every CSV, not for the HTML page written after them
    assert max(len(earlier[name]) for name in ("readings.csv", "summary.csv", "cases.csv")) + 500 < limit
    assert len(earlier["report.html"]) > limit
    with disk_full_after(paths["summary"], room=3000), pytest.raises(OutputError, match="cannot write .*report.html"):
        report(created.folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == earlier  # no new CSV beside the old page, no stage
    result, replaced = report(created.folder, overwrite=True)
    assert replaced == paths and result.answered["halfway"] == 7
    assert paths["summary"].read_bytes() != earlier["summary.csv"]
    assert (folder / "notes.txt").read_text() == "the organiser's own notes"


def test_a_key_from_another_session_is_refused(rated, tmp_path):
    created, _ = rated
    real, generated = make_sources(tmp_path / "other")
    other = TuringSession.create(tmp_path / "other" / "s", real, generated, n_cases=12, seed=9)
    with pytest.raises(InputError, match="another session"):
        build_report(created.folder, key=other.key_path)


def test_journal_problems_appear_in_the_report(rated):
    created, _ = rated
    with open(created.folder / "journal" / "oracle.jsonl", "ab") as f:
        f.write(b"garbage line\n")
    result = build_report(created.folder)
    assert any("damaged" in p for p in result.problems)
    assert {s.name: s for s in result.raters}["oracle"].accuracy.n == 12


def test_a_report_inside_the_shared_session_folder_is_refused_before_writing(rated):
    from CircleOfWillisGANLib.errors import OutputError

    created, _ = rated
    before = sorted(p.relative_to(created.folder) for p in created.folder.rglob("*"))
    for out in (created.folder, created.folder / "results"):
        with pytest.raises(OutputError, match="inside the session folder .*would show them the answers"):
            report(created.folder, out=out)
    assert sorted(p.relative_to(created.folder) for p in created.folder.rglob("*")) == before


def test_copied_stray_or_foreign_journals_are_left_out_with_a_note(rated, tmp_path):
    import shutil

    created, _ = rated
    journal = created.folder / "journal"
    shutil.copy(journal / "oracle.jsonl", journal / "oracle (copy).jsonl")
    real, generated = make_sources(tmp_path / "other")
    other = TuringSession.create(tmp_path / "other" / "s", real, generated, n_cases=12, seed=9, raters=["halfway"])
    s = TuringSession.open(other.folder, "halfway")
    for _ in range(4):
        s.answer(s.next_case().case_id, "real", 2)
    s.close()
    shutil.copy(other.folder / "journal" / "halfway.jsonl", journal / "halfway.jsonl")  # same case ids, other session
    result = build_report(created.folder)
    assert [(s.name, s.accuracy.n) for s in result.raters] == [("contrarian", 12), ("halfway", 0), ("oracle", 12)]
    assert result.pooled.accuracy.n == 24 and "rater halfway answered none of the 12 cases" in result.problems
    assert "oracle (copy).jsonl is not the journal of one of this session's raters and was left out" in result.problems
    assert sum("written for another session" in p for p in result.problems) == 4


def test_an_answer_with_an_impossible_time_is_skipped_and_the_report_still_written(rated):
    from CircleOfWillisGANLib.turing.journal import Journal

    created, _ = rated
    journal = Journal(created.folder / "journal" / "oracle.jsonl")
    session_id = __import__("json").loads((created.folder / "session.json").read_text())["session_id"]
    journal.append({"event": "answer", "case": "case-001", "call": "real", "confidence": 3, "comment": "",
                    "elapsed_s": -5.0, "over_limit": False, "seq": 99, "session": session_id})
    journal.close()
    result, paths = report(created.folder)
    assert "oracle.jsonl: journal record 99 is incomplete or malformed and was skipped" in result.problems
    assert {s.name: s for s in result.raters}["oracle"].accuracy.k == 12 and paths["html"].is_file()


@pytest.mark.parametrize("edit", [lambda k: k["cases"][0].update(truth="generated"), lambda k: k.update(version=2),
                                  lambda k: k["cases"].append(dict(k["cases"][0]))])
def test_an_answer_key_edited_by_hand_is_refused(rated, edit):
    import json

    created, _ = rated
    key = json.loads(created.key_path.read_text())
    edit(key)
    created.key_path.write_text(json.dumps(key))
    with pytest.raises(InputError, match="answer key .* (is damaged|is version 2)"):
        build_report(created.folder)


def test_an_edited_session_file_and_answers_added_by_hand_are_named_in_the_report(rated):
    import json

    from CircleOfWillisGANLib.turing.journal import encode, read_journal

    created, truth = rated
    assert build_report(created.folder).problems == ["rater halfway answered 6 of the 12 cases"]
    session_file = created.folder / "session.json"
    original = session_file.read_bytes()
    session_file.write_text(json.dumps(dict(json.loads(original), time_limit_s=None, allow_back=True)))
    assert any("session.json was changed after the session was made" in p for p in build_report(created.folder).problems)
    session_file.write_bytes(original)
    journal = created.folder / "journal" / "halfway.jsonl"
    forged = [dict(r, seq=100 + k) for k, r in enumerate(read_journal(journal).records) if r["event"] == "answer"][:2]
    with open(journal, "ab") as f:
        for record in forged:
            f.write(encode({k: v for k, v in record.items() if k != "crc"}))
    problems = build_report(created.folder).problems
    assert problems == ["halfway.jsonl: 2 answer(s) repeat a case already answered, which the rater window cannot "
                        "write in a session without going back; the last answer of each case was counted",
                        "rater halfway answered 6 of the 12 cases"]


def test_a_session_file_edited_to_allow_going_back_does_not_hide_changed_answers_nor_a_removed_limit(rated):
    import json

    from CircleOfWillisGANLib.turing.journal import encode, read_journal

    created, _ = rated
    session_file = created.folder / "session.json"
    session_file.write_text(json.dumps(dict(json.loads(session_file.read_bytes()), allow_back=True)))
    journal = created.folder / "journal" / "halfway.jsonl"
    first = next(r for r in read_journal(journal).records if r["event"] == "answer")
    with open(journal, "ab") as f:  # a changed answer, taking 1000 s, as going back would write it
        f.write(encode({k: v for k, v in dict(first, seq=200, call="real", elapsed_s=1000.0).items() if k != "crc"}))
    made = json.loads(created.key_path.read_text())
    assert made["settings"] == {"allow_back": False, "time_limit_s": None}
    result = build_report(created.folder)
    assert any("halfway.jsonl: 1 answer(s) repeat a case already answered" in p for p in result.problems)
    made["settings"]["time_limit_s"] = 60.0  # a session made with a limit that session.json no longer shows
    created.key_path.write_text(json.dumps(made))
    halfway = {s.name: s for s in build_report(created.folder).raters}["halfway"]
    assert halfway.over_limit == 1


def test_a_journal_record_whose_case_is_not_text_is_skipped_not_a_crash(rated):
    import json

    from CircleOfWillisGANLib.turing import status
    from CircleOfWillisGANLib.turing.journal import Journal

    created, _ = rated
    session_id = json.loads((created.folder / "session.json").read_text())["session_id"]
    journal = Journal(created.folder / "journal" / "oracle.jsonl")
    for seq, case in ((98, ["case-001"]), (99, {})):
        journal.append({"event": "answer", "case": case, "call": "real", "confidence": 3, "comment": "",
                        "elapsed_s": 5.0, "over_limit": False, "seq": seq, "session": session_id})
    journal.close()
    result = build_report(created.folder)
    assert "oracle.jsonl: journal record 98 is incomplete or malformed and was skipped" in result.problems
    assert {s.name: s for s in result.raters}["oracle"].accuracy.k == 12
    assert status.session_status(created.folder)
    TuringSession.open(created.folder, "oracle").close()


def test_a_reader_without_readings_has_no_accuracy_interval_in_the_summary(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=1, raters=["r1"])
    _, paths = report(created.folder)
    with open(paths["summary"], newline="") as f:
        rows = {row["rater"]: row for row in csv.DictReader(f)}
    assert {k: rows["r1"][k] for k in ("answered", "accuracy", "accuracy_ci_low", "accuracy_ci_high")} == {
        "answered": "0", "accuracy": "", "accuracy_ci_low": "", "accuracy_ci_high": ""}


def test_a_copy_of_a_journal_under_another_valid_id_is_left_out_and_named(tmp_path):
    import shutil

    from CircleOfWillisGANLib.turing.status import session_status

    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=8)  # open to any rater id
    s = TuringSession.open(created.folder, "reader01")
    for k in range(12):
        s.answer(s.next_case().case_id, ("real", "fake")[k % 2], 3)
    s.close()
    journal = created.folder / "journal"
    shutil.copy(journal / "reader01.jsonl", journal / "reader01_backup.jsonl")
    result = build_report(created.folder)
    assert [(s.name, s.accuracy.n) for s in result.raters] == [("reader01", 12), ("reader01_backup", 0)]
    assert result.pooled.accuracy.n == 12 and result.agreement is None
    assert result.problems == ["reader01_backup.jsonl: 24 record(s) were written by rater reader01, not "
                               "reader01_backup (a copy of another rater's journal?), and were left out",
                               "rater reader01_backup answered none of the 12 cases"]
    assert "reader01_backup: 0 of 12 answered (24 damaged or foreign journal line(s) skipped)" in session_status(
        created.folder)
    copied = TuringSession.open(created.folder, "reader01_backup")  # a rater starting on the copy starts afresh
    assert copied.answers == {} and copied.progress().label == "case 1 of 12" and len(copied.problems) == 1
    copied.close()


def test_journals_written_before_records_named_their_rater_still_count(rated):
    from CircleOfWillisGANLib.turing.journal import encode, read_journal

    created, _ = rated
    journal = created.folder / "journal" / "oracle.jsonl"
    records = read_journal(journal).records
    assert {r["rater"] for r in records} == {"oracle"}
    journal.write_bytes(b"".join(encode({k: v for k, v in r.items() if k != "rater"}) for r in records))
    result = build_report(created.folder)
    assert {s.name: s for s in result.raters}["oracle"].accuracy.k == 12
    assert result.problems == ["rater halfway answered 6 of the 12 cases"]


@pytest.mark.parametrize("rater", ["pooled", "Pooled"])
def test_pooled_is_no_rater_id_so_summary_csv_has_one_pooled_row(tmp_path, rater):
    from CircleOfWillisGANLib.turing.journal import encode, read_journal

    real, generated = make_sources(tmp_path)
    with pytest.raises(InputError, match=f"rater id '{rater}' is reserved for the results' row of all readings pooled"):
        TuringSession.create(tmp_path / "refused", real, generated, n_cases=12, raters=[rater, "reader02"])
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=8)
    with pytest.raises(InputError, match="reserved"):
        TuringSession.open(created.folder, rater)
    s = TuringSession.open(created.folder, "reader02")
    for _ in range(12):
        s.answer(s.next_case().case_id, "real", 3)
    s.close()
    journal = created.folder / "journal"  # as an earlier version let a rater called 'pooled' write it
    (journal / f"{rater}.jsonl").write_bytes(b"".join(
        encode({k: v for k, v in r.items() if k != "rater"}) for r in read_journal(journal / "reader02.jsonl").records))
    result, paths = report(created.folder, out=tmp_path / "report")
    with open(paths["summary"], newline="") as f:
        assert [row[:3] for row in csv.reader(f)][1:] == [["reader02", "12", "12"], ["pooled", "", "12"]]
    assert f"{rater}.jsonl is not the journal of one of this session's raters and was left out" in result.problems


def test_every_listed_rater_gets_a_row_and_those_who_did_not_finish_a_warning(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=8, seed=3, raters=["done", "idle", "part", "absent"])
    for rater, n in (("done", 8), ("idle", 0), ("part", 3)):  # 'idle' opens the session and answers nothing
        s = TuringSession.open(created.folder, rater)
        for _ in range(n):
            s.answer(s.next_case().case_id, "real", 3)
        s.next_case()
        s.close()
    result, paths = report(created.folder)
    with open(paths["summary"], newline="") as f:
        rows = [row[:5] for row in csv.reader(f)][1:]
    assert rows[:4] == [["absent", "0", "0", "0", ""], ["done", "8", "8", rows[1][3], rows[1][4]],
                        ["idle", "0", "0", "0", ""], ["part", "3", "3", rows[3][3], rows[3][4]]]
    assert result.problems == ["rater absent answered none of the 8 cases", "rater idle answered none of the 8 cases",
                               "rater part answered 3 of the 8 cases"]
    html = paths["html"].read_text()
    assert "<td>absent</td><td>0</td>" in html and "<td>idle</td><td>0</td>" in html and "4 rater(s)" in html
    text = summary_text(result)
    assert "absent: no answers" in text and "idle: no answers" in text and text.count("warning: rater") == 3


def test_answers_written_for_another_session_are_not_called_repeated_answers(tmp_path):
    real, generated = make_sources(tmp_path)
    sessions = [TuringSession.create(tmp_path / name, real, generated, n_cases=8, seed=seed, key_path=tmp_path / f"{name}.json")
                for name, seed in (("s", 1), ("other", 2))]
    for created in sessions:
        s = TuringSession.open(created.folder, "a")
        for _ in range(8):
            s.answer(s.next_case().case_id, "real", 3)
        s.close()
    journal = sessions[0].folder / "journal" / "a.jsonl"
    journal.write_bytes(journal.read_bytes() + (sessions[1].folder / "journal" / "a.jsonl").read_bytes())
    problems = build_report(sessions[0].folder, key=sessions[0].key_path).problems
    assert problems and all("written for another session and was skipped" in p for p in problems)


def test_comments_that_a_spreadsheet_would_run_as_formulas_are_written_as_text(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=8, seed=3)
    comments = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain, = fine", ""]
    s = TuringSession.open(created.folder, "a")
    for comment in comments:
        s.answer(s.next_case().case_id, "real", 3, comment)
    s.close()
    _, paths = report(created.folder)
    with open(paths["readings"], newline="") as f:
        written = sorted(row["comment"] for row in csv.DictReader(f))
    assert written == sorted(["'" + c for c in comments[:6]] + comments[6:])
