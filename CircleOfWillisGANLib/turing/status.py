"""Progress of every rater on a session, from the journals alone (the answer key is not read)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

from .journal import read_journal
from .layout import JOURNAL_DIR, read_session
from .rater import latest_answers


def session_status(folder: Union[str, Path]) -> List[str]:
    """One line per rater: answered of total, and damaged journal lines if any."""
    folder = Path(folder)
    session = read_session(folder)
    cases = list(session["cases"])
    lines = [f"{len(cases)} cases; display {session['display']}"]
    seen = set()
    for path in sorted((folder / JOURNAL_DIR).glob("*.jsonl")):
        contents = read_journal(path)
        answers, problems = latest_answers(contents.records, cases)
        seen.add(path.stem)
        damaged = len(contents.problems) + len(problems)
        lines.append(f"{path.stem}: {len(answers)} of {len(cases)} answered"
                     + (f" ({damaged} damaged journal line(s) skipped)" if damaged else ""))
    lines += [f"{r}: not started" for r in session.get("raters", []) if r not in seen]
    return lines
