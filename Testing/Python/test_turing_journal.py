"""Durability: answers on disk before the next case, resume after SIGKILL, damaged lines, separate raters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from CircleOfWillisGANLib.errors import InputError, OutputError
from CircleOfWillisGANLib.turing import TuringSession
from CircleOfWillisGANLib.turing.journal import read_journal
from turing_data import disk_full_after, make_sources

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def session(tmp_path):
    real, generated = make_sources(tmp_path)
    return TuringSession.create(tmp_path / "session", real, generated, n_cases=12, seed=5).folder


def _answer(s, n, call="fake"):
    ids = []
    for _ in range(n):
        case = s.next_case()
        s.answer(case.case_id, call, 3, comment=f"note on {case.case_id}")
        ids.append(case.case_id)
    return ids


def test_answer_is_in_the_journal_file_when_it_returns(session):
    s = TuringSession.open(session, "r1")
    case = s.next_case()
    s.answer(case.case_id, "real", 4, "thin vessels")
    records = read_journal(session / "journal" / "r1.jsonl").records
    assert records[-1]["case"] == case.case_id and records[-1]["call"] == "real" and records[-1]["confidence"] == 4
    s.close()


def test_reopening_resumes_at_the_first_unanswered_case(session):
    s = TuringSession.open(session, "r1")
    done = _answer(s, 5)
    s.close()
    again = TuringSession.open(session, "r1")
    assert set(again.answers) == set(done)
    assert again.progress().label == "case 6 of 12"
    assert again.next_case().case_id == again.order[5]
    again.close()


def test_next_case_repeats_the_case_on_screen_until_it_is_answered(session):
    s = TuringSession.open(session, "r1")
    assert s.next_case().case_id == s.next_case().case_id
    with pytest.raises(InputError, match="not the case on screen"):
        s.answer(s.order[3], "real", 2)
    s.close()


def test_session_finishes_after_the_last_case(session):
    s = TuringSession.open(session, "r1")
    _answer(s, 12)
    assert s.next_case() is None and s.progress().done and s.progress().label == "all 12 cases answered"
    s.close()


def test_two_raters_keep_separate_journals_and_orders(session):
    a, b = TuringSession.open(session, "alice"), TuringSession.open(session, "bob")
    _answer(a, 3, "real")
    _answer(b, 4, "fake")
    assert a.order != b.order and sorted(a.order) == sorted(b.order)
    a.close(), b.close()
    assert len(TuringSession.open(session, "alice").answers) == 3
    assert len(TuringSession.open(session, "bob").answers) == 4


def test_the_same_rater_cannot_open_a_session_twice_at_once(session):
    first = TuringSession.open(session, "r1")
    with pytest.raises(InputError, match="already open"):
        TuringSession.open(session, "r1")
    first.close()
    TuringSession.open(session, "r1").close()


def test_a_damaged_line_is_reported_and_the_rest_kept(session):
    s = TuringSession.open(session, "r1")
    done = _answer(s, 4)
    s.close()
    path = session / "journal" / "r1.jsonl"
    lines = path.read_text().splitlines()
    answer_lines = [k for k, line in enumerate(lines) if '"answer"' in line]
    lines[answer_lines[1]] = lines[answer_lines[1]].replace('"confidence":3', '"confidence":5')
    path.write_text("\n".join(lines) + "\n")
    again = TuringSession.open(session, "r1")
    assert set(again.answers) == set(done) - {done[1]}
    assert len(again.problems) == 1 and "damaged" in again.problems[0]
    again.close()


def test_a_line_cut_short_by_a_crash_is_skipped_and_new_answers_start_a_fresh_line(session):
    s = TuringSession.open(session, "r1")
    done = _answer(s, 3)
    s.close()
    path = session / "journal" / "r1.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"call":"real","case":"case-0')
    again = TuringSession.open(session, "r1")
    assert set(again.answers) == set(done) and len(again.problems) == 1
    more = _answer(again, 2)
    again.close()
    final = TuringSession.open(session, "r1")
    assert set(final.answers) == set(done + more) and len(final.problems) == 1
    final.close()


def test_going_back_is_refused_unless_allowed(session):
    s = TuringSession.open(session, "r1")
    _answer(s, 1)
    s.next_case()
    with pytest.raises(InputError, match="does not allow going back"):
        s.previous_case()
    s.close()


def test_going_back_revises_an_answer_and_returns_to_the_first_unanswered(tmp_path):
    real, generated = make_sources(tmp_path)
    folder = TuringSession.create(tmp_path / "s", real, generated, n_cases=6, allow_back=True).folder
    s = TuringSession.open(folder, "r1")
    first, second = _answer(s, 2, "real")
    s.next_case()
    back = s.previous_case()
    assert back.case_id == second and back.previous.call == "real" and s.progress().label == "case 2 of 6"
    s.answer(second, "fake", 5)
    assert s.next_case().case_id == s.order[2]
    s.close()
    assert TuringSession.open(folder, "r1").answers[second].call == "fake"


def test_time_limit_marks_late_answers(tmp_path):
    real, generated = make_sources(tmp_path)
    folder = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=0.05).folder
    s = TuringSession.open(folder, "r1")
    quick = s.next_case()
    assert 0 < s.time_left_s() <= 0.05
    assert not s.answer(quick.case_id, "real", 3).over_limit
    slow = s.next_case()
    time.sleep(0.08)
    assert s.time_left_s() < 0
    late = s.answer(slow.case_id, "real", 3)
    assert late.over_limit and late.elapsed_s >= 0.08
    s.close()


RATER_SCRIPT = """
import sys
from CircleOfWillisGANLib.turing import TuringSession
s = TuringSession.open(sys.argv[1], "killed")
while True:
    case = s.next_case()
    if case is None:
        break
    s.answer(case.case_id, "fake", 2)
    print("saved", case.case_id, flush=True)
print("finished", flush=True)
"""


def test_a_rater_process_killed_with_sigkill_loses_no_saved_answer(tmp_path):
    real, generated = make_sources(tmp_path, n_real=40, n_generated=40)
    folder = TuringSession.create(tmp_path / "s", real, generated, n_cases=80, seed=1).folder
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", RATER_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    confirmed = []
    for line in proc.stdout:
        if line.startswith("saved"):
            confirmed.append(line.split()[1])
        if len(confirmed) == 25:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    resumed = TuringSession.open(folder, "killed")
    assert set(confirmed) <= set(resumed.answers)
    assert not resumed.problems or all("damaged" in p for p in resumed.problems)
    assert len(resumed.answers) < 80, "the process was killed before finishing"
    assert resumed.order[: len(resumed.answers)] == [c for c in resumed.order if c in resumed.answers]
    nxt = resumed.next_case()
    assert nxt.case_id not in resumed.answers and nxt.number == len(resumed.answers) + 1
    resumed.close()


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.update(raters="r1"), "rater list"),
    (lambda s: s.update(display="weird"), "display 'weird'"),
    (lambda s: s.update(time_limit_s="abc"), "time limit 'abc'"),
    (lambda s: s["cases"].append(s["cases"][0]), "repeats a case"),
])
def test_a_session_file_edited_by_hand_is_refused_when_a_rater_opens_it(session, edit, problem):
    import json

    path = session / "session.json"
    description = json.loads(path.read_text())
    edit(description)
    path.write_text(json.dumps(description))
    with pytest.raises(InputError, match=f"session.json is damaged \\(.*{problem}"):
        TuringSession.open(session, "r1")


def test_a_newer_session_file_asks_for_an_upgrade_not_a_new_session(session):
    import json

    path = session / "session.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), version=2)))
    with pytest.raises(InputError, match="newer than this software reads .*upgrade CircleOfWillisGAN"):
        TuringSession.open(session, "r1")


def test_a_real_fraction_that_leaves_no_real_or_no_generated_case_is_refused(tmp_path):
    real, generated = make_sources(tmp_path)
    for fraction in (0.01, 0.99):
        with pytest.raises(InputError, match=f"real fraction {fraction} of 10 cases gives"):
            TuringSession.create(tmp_path / f"s{fraction}", real, generated, n_cases=10, real_fraction=fraction)


def test_a_real_fraction_outside_0_and_1_is_refused_naming_the_default_and_randomised(tmp_path):
    real, generated = make_sources(tmp_path)
    with pytest.raises(InputError, match=r"^real fraction 2.0 must lie strictly between 0 and 1 \(0.5, the default, "
                                         r"for 50:50\), or be 'randomised' for a share drawn within 40-60%$"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=10, real_fraction=2)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=10, real_fraction="randomised")
    assert created.n_real in (4, 5, 6)


def test_a_case_shown_again_after_closing_keeps_counting_its_viewing_time_toward_the_limit(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=5.0)
    s = TuringSession.open(created.folder, "r1")
    case = s.next_case()
    time.sleep(0.3)
    s.close()  # the rater closes the window mid-case and reopens it
    s = TuringSession.open(created.folder, "r1")
    assert s.next_case().case_id == case.case_id
    assert 3.5 < s.time_left_s() < 4.75  # the earlier 0.3 s counts (a fresh clock would say 5)
    time.sleep(0.2)
    answer = s.answer(case.case_id, "real", 3)
    assert 0.5 <= answer.elapsed_s < 1.5 and not answer.over_limit
    s.close()


def test_a_view_that_never_closed_counts_as_the_whole_time_limit(tmp_path):
    real, generated = make_sources(tmp_path)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=5.0)
    s = TuringSession.open(created.folder, "r1")
    case = s.next_case()
    s._journal.close()  # killed while the case was on screen: no record of how long it was seen
    s = TuringSession.open(created.folder, "r1")
    assert s.next_case().case_id == case.case_id and s.time_left_s() <= 0.0
    assert s.answer(case.case_id, "fake", 2).over_limit
    s.close()


@pytest.mark.parametrize("damage, problem", [(lambda path: path.unlink(), "is missing from the session folder"),
                                             (lambda path: path.write_bytes(path.read_bytes()[:200]),
                                              r"is damaged \(its header cannot be read\)")],
                         ids=["missing", "header cut short"])
def test_a_missing_or_damaged_case_file_stops_the_session_opening_before_anything_is_journalled(session, damage,
                                                                                                 problem):
    victim = sorted((session / "cases").iterdir())[-1]
    damage(victim)
    with pytest.raises(InputError, match=f"case file {victim.name} {problem}: ask the organiser to restore it"):
        TuringSession.open(session, "r1")
    assert not (session / "journal" / "r1.jsonl").exists()


def test_a_case_file_cut_short_after_opening_is_not_shown_answered_or_counted_as_seen(tmp_path):
    real, generated = make_sources(tmp_path)
    folder = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=60).folder
    s = TuringSession.open(folder, "r1")
    first = s.next_case()
    s.answer(first.case_id, "real", 3)
    second = s.order[1]
    path = folder / "cases" / f"{second}.nii"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted sync: header intact, voxels cut short
    with pytest.raises(InputError, match=f"case file {second}.nii is damaged \\(cut short\\): ask the organiser"):
        s.next_case()
    assert s.on_screen is None
    with pytest.raises(InputError, match="not the case on screen"):
        s.answer(second, "fake", 4)
    assert not any(r.get("case") == second for r in read_journal(folder / "journal" / "r1.jsonl").records)
    path.write_bytes(whole)  # restored by the organiser
    assert s.next_case().case_id == second and s.time_left_s() > 59  # never seen before: its whole time is left
    s.close()


def test_an_answer_cut_off_by_a_full_disk_leaves_no_partial_line_and_its_retry_is_kept(session):
    s = TuringSession.open(session, "r1")
    first = _answer(s, 1)
    case = s.next_case()
    journal = session / "journal" / "r1.jsonl"
    size = journal.stat().st_size
    with disk_full_after(journal, 60), pytest.raises(OutputError, match=f"cannot write the journal {journal} "
                                                                        r"\(File too large\): free disk space"):
        s.answer(case.case_id, "fake", 5, "first try")
    assert journal.stat().st_size == size and case.case_id not in s.answers
    s.answer(case.case_id, "fake", 5, "second try")
    s.close()
    again = TuringSession.open(session, "r1")
    assert again.problems == [] and set(again.answers) == set(first) | {case.case_id}
    assert again.answers[case.case_id].comment == "second try"
    again.close()


def test_going_back_to_an_answered_case_goes_on_counting_its_time_toward_the_limit(tmp_path):
    real, generated = make_sources(tmp_path)
    folder = TuringSession.create(tmp_path / "s", real, generated, n_cases=4, time_limit=1.0, allow_back=True).folder
    s = TuringSession.open(folder, "r1")
    first = s.next_case()
    time.sleep(0.6)
    assert not s.answer(first.case_id, "real", 3).over_limit
    s.next_case()
    s.previous_case()
    assert 0.0 < s.time_left_s() < 0.4  # the first visit's 0.6 s count (a restarted clock would say 1.0)
    time.sleep(0.6)
    revised = s.answer(first.case_id, "fake", 4)
    assert revised.over_limit and revised.elapsed_s >= 1.2
    s.close()
    again = TuringSession.open(folder, "r1")
    assert again.answers[first.case_id].elapsed_s == revised.elapsed_s
    again.next_case()
    again.previous_case()
    assert again.time_left_s() <= -0.2  # the total comes back from the journal too
    again.close()
