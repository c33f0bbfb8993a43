"""Progress of every rater on a session, from the journals alone (the answer key is not read)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

from .journal import read_journal
from .layout import read_session
from .rater import latest_answers, own_records, rater_journals


def session_status(folder: Union[str, Path]) -> List[str]:
    """One line per rater: answered of total, and damaged journal lines if any."""
    folder = Path(folder)
    session = read_session(folder)
    cases = list(session["cases"])
    lines = [f"{len(cases)} cases; display {session['display']}"]
    seen = set()
    journals, strays = rater_journals(folder, session)
    for rater, path in journals:
        contents = read_journal(path)
        records, _ = own_records(contents.records, rater)
        answers, problems = latest_answers(records, cases, session.get("session_id"))
        seen.add(rater)
        damaged = len(contents.problems) + len(problems) + len(contents.records) - len(records)
        lines.append(f"{rater}: {len(answers)} of {len(cases)} answered"
                     + (f" ({damaged} damaged or foreign journal line(s) skipped)" if damaged else ""))
    lines += [f"{r}: not started" for r in session.get("raters", []) if r not in seen]
    return lines + strays
