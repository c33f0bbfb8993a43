"""One rater working through a session: the case on screen, answers written before the next case, resume."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import InputError
from .config import POOLED, RATER_ID_PATTERN, check_call, check_confidence, check_rater_id
from .journal import Journal, read_journal
from .layout import JOURNAL_DIR, case_path, check_case_file, journal_path, read_session

log = logging.getLogger(__name__)
MAX_COMMENT = 2000
Show = Callable[[Path, str], None]  # a host viewer's show_case(path, display)


@dataclass(frozen=True)
class Answer:
    """A rater's latest call on one case."""

    case_id: str
    call: str
    confidence: int
    comment: str
    elapsed_s: float
    over_limit: bool


@dataclass(frozen=True)
class Case:
    """The case to show: its neutral id and file, where it sits in this rater's order, any earlier answer."""

    case_id: str
    path: Path
    number: int
    total: int
    display: str
    time_limit_s: Optional[float]
    previous: Optional[Answer]


@dataclass(frozen=True)
class Progress:
    """How far a rater has come."""

    answered: int
    total: int
    current: Optional[int]

    @property
    def done(self) -> bool:
        return self.answered >= self.total

    @property
    def label(self) -> str:
        """'case 12 of 60', or 'all 60 cases answered'."""
        if self.current is None:
            return f"all {self.total} cases answered"
        return f"case {self.current} of {self.total}"


def rater_order(rater: str, case_ids: List[str], session_id: str = "") -> List[str]:
    """This rater's own shuffled order, derived from the rater id, the neutral ids and the session's id (a digest of
    its case files; empty for sessions made before orders differed between sessions) only."""
    salt = f"{session_id}\n" if session_id else ""
    return sorted(case_ids, key=lambda cid: hashlib.sha256(f"{salt}{rater}\n{cid}".encode("utf-8")).hexdigest())


def latest_answers(records: List[Dict[str, Any]], case_ids: List[str],
                   session_id: Optional[str] = None) -> Tuple[Dict[str, Answer], List[str]]:
    """Each case's latest valid answer from journal records, and one message per record that was unusable; with a
    `session_id`, records written for another session (a journal copied between sessions) are skipped too."""
    known = set(case_ids)
    answers: Dict[str, Answer] = {}
    problems: List[str] = []
    for record in records:
        if record.get("event") != "answer":
            continue
        if not of_session(record, session_id):
            problems.append(f"journal record {record.get('seq')} was written for another session and was skipped")
            continue
        try:
            answer = _answer_of(record)
        except (KeyError, TypeError, ValueError):
            problems.append(f"journal record {record.get('seq')} is incomplete or malformed and was skipped")
            continue
        if answer.case_id not in known:
            problems.append(f"journal record {record.get('seq')} names an unknown case and was skipped")
            continue
        answers[answer.case_id] = answer
    return answers, problems


def of_session(record: Dict[str, Any], session_id: Optional[str]) -> bool:
    """Whether a journal record was written for the session `session_id` (any session when None): a journal copied in
    from another session with the same case ids must not count."""
    return session_id is None or record.get("session") == session_id


def own_records(records: List[Dict[str, Any]], rater: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The records of a journal that its rater wrote, and a message if others were left out: every record names its
    rater, so a copy of one rater's journal under another id (a backup) does not count as a second rater. Records
    of earlier versions name no rater and are kept."""
    own = [r for r in records if r.get("rater", rater) == rater]
    others = sorted({str(r.get("rater")) for r in records if r.get("rater", rater) != rater})
    if not others:
        return own, []
    return own, [f"{len(records) - len(own)} record(s) were written by rater {', '.join(others)}, not {rater} (a copy "
                 "of another rater's journal?), and were left out"]


def viewing_times(records: List[Dict[str, Any]], time_limit_s: Optional[float]) -> Dict[str, float]:
    """Seconds each case was seen in all, from its journalled views and answers (an answer holds the case's total
    so far, so a case revised after going back goes on counting). A view that never closed (the program was killed)
    counts as the whole time limit."""
    seen: Dict[str, float] = {}
    open_view: Optional[str] = None
    for record in records:
        event, case = record.get("event"), record.get("case")
        if not isinstance(case, str):
            continue
        if open_view is not None and (event == "view" or (event == "answer" and open_view != case)):
            seen[open_view] = seen.get(open_view, 0.0) + (time_limit_s or 0.0)  # that view never closed
        if event == "view":
            open_view = case
        elif event == "hide":
            seen[case] = seen.get(case, 0.0) + _seconds(record.get("viewed_s"))
            open_view = None
        elif event == "answer":
            seen[case] = max(seen.get(case, 0.0), _seconds(record.get("elapsed_s")))
            open_view = None
    if open_view is not None:
        seen[open_view] = seen.get(open_view, 0.0) + (time_limit_s or 0.0)
    return seen


def _seconds(value: Any) -> float:
    """A journalled time in seconds, or 0 where the field is not one."""
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < math.inf
    return float(value) if valid else 0.0


def admitted_session(folder: Union[str, Path], rater: str) -> Dict[str, Any]:
    """The session description, if `rater` is a usable id that the session admits; InputError naming the fix if not."""
    check_rater_id(rater)
    session = read_session(folder)
    allowed = session.get("raters") or []
    if allowed and rater not in allowed:
        raise InputError(f"rater id {rater!r} is not one of this session's raters ({', '.join(allowed)}): "
                         "use your assigned id, or ask the organiser to add you")
    _check_no_case_twin(Path(folder), rater)
    return session


def _check_no_case_twin(folder: Path, rater: str) -> None:
    """Refuse an id that differs only in case from one with a journal already: on a case-insensitive file system
    (Windows, macOS) both would write one journal file."""
    for path in (folder / JOURNAL_DIR).glob("*.jsonl"):
        if path.stem != rater and path.stem.casefold() == rater.casefold():
            raise InputError(f"rater id {rater!r} differs only in case from rater {path.stem!r}, who has a journal in "
                             "this session, and would share that file on Windows or macOS: use your assigned id exactly")


def rater_journals(folder: Union[str, Path], session: Dict[str, Any]) -> Tuple[List[Tuple[str, Path]], List[str]]:
    """(rater, journal path) of each journal in a session folder, and one message per file that is no rater's
    journal (a copy, a stray file, a rater the session does not list), which is left out."""
    allowed = session.get("raters") or []
    journals, problems = [], []
    for path in sorted((Path(folder) / JOURNAL_DIR).glob("*.jsonl")):
        rater = path.stem
        if not RATER_ID_PATTERN.match(rater) or rater.lower() == POOLED or (allowed and rater not in allowed):
            problems.append(f"{path.name} is not the journal of one of this session's raters and was left out")
            continue
        journals.append((rater, path))
    return journals, problems


def _show_case(show: Show, case: Case) -> None:
    """Have the host's viewer load and show a case; any failure to load it is named as the case file's."""
    try:
        show(case.path, case.display)
    except Exception as exc:  # viewers (nibabel, Slicer) raise many types for a file they cannot load
        raise InputError(f"case file {case.path.name} could not be shown ({' '.join(str(exc).split())}): ask the "
                         "organiser to restore it (the answers saved so far are kept)") from exc


def _answer_of(record: Dict[str, Any]) -> Answer:
    """The Answer a journal record holds; ValueError or TypeError if a field has the wrong type or range."""
    elapsed, over_limit, comment = record["elapsed_s"], record["over_limit"], record.get("comment", "")
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0.0 <= elapsed < math.inf:
        raise ValueError(f"elapsed_s {elapsed!r} is not a time")
    if not isinstance(over_limit, bool) or not isinstance(comment, str) or not isinstance(record["case"], str):
        raise TypeError("over_limit must be true or false, and comment and case text")
    return Answer(record["case"], check_call(record["call"]), check_confidence(record["confidence"]), comment,
                  float(elapsed), over_limit)


class RaterSession:
    """A session opened by one rater. Each answer is fsync'ed to the rater's journal before `answer` returns."""

    def __init__(self, folder: Union[str, Path], rater: str) -> None:
        self.folder = Path(folder)
        self.session = admitted_session(self.folder, rater)
        self.rater = rater
        self.order = rater_order(rater, list(self.session["cases"]),
                                 self.session.get("session_id", "") if self.session.get("order_per_session") else "")
        for cid in self.order:  # before anything is journalled: a case the rater cannot see must not count as seen
            check_case_file(case_path(self.folder, cid))
        (self.folder / JOURNAL_DIR).mkdir(exist_ok=True)
        self.answers: Dict[str, Answer] = {}
        self.problems: List[str] = []
        self._seq = 0
        self._load_journal()
        self._journal = Journal(journal_path(self.folder, rater))
        self._cursor = self._first_unanswered()
        self._shown_id: Optional[str] = None
        self._shown_at = 0.0

    @property
    def on_screen(self) -> Optional[str]:
        """The id of the case on screen, the only one that takes an answer (None between cases)."""
        return self._shown_id

    @property
    def allow_back(self) -> bool:
        return bool(self.session.get("allow_back"))

    @property
    def time_limit_s(self) -> Optional[float]:
        limit = self.session.get("time_limit_s")
        return None if limit is None else float(limit)

    def _load_journal(self) -> None:
        contents = read_journal(journal_path(self.folder, self.rater))
        self._seq = max([int(r.get("seq", 0)) for r in contents.records if isinstance(r.get("seq"), int)] or [0])
        records, foreign = own_records(contents.records, self.rater)
        self.answers, problems = latest_answers(records, self.order, self.session.get("session_id"))
        self.viewed_before = viewing_times(records, self.time_limit_s)
        self.problems = list(contents.problems) + foreign + problems
        for problem in self.problems:
            log.warning("rater %s: %s", self.rater, problem)

    def _first_unanswered(self) -> int:
        for k, cid in enumerate(self.order):
            if cid not in self.answers:
                return k
        return len(self.order)

    def _record(self, record: Dict[str, Any]) -> None:
        """Journal one event; on an OutputError (disk full) nothing of it is on disk and the session is unchanged."""
        session_id = self.session.get("session_id")
        self._journal.append(dict(record, seq=self._seq + 1, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  rater=self.rater, **({"session": session_id} if session_id else {})))
        self._seq += 1

    def _show(self, index: int, show: Optional[Show]) -> Case:
        """Put a case on screen: its file is checked and shown (by `show`, the host's viewer) before its view is
        journalled and its clock starts, so a case that fails to load is neither answerable nor counted as seen."""
        cid = self.order[index]
        case = Case(cid, case_path(self.folder, cid), index + 1, len(self.order), self.session["display"],
                    self.time_limit_s, self.answers.get(cid))
        if self._shown_id != cid:
            self._hide()
            check_case_file(case.path)
            if show is not None:
                _show_case(show, case)
            self._record({"event": "view", "case": cid})
            self._shown_id, self._shown_at = cid, time.monotonic()
        return case

    def next_case(self, show: Optional[Show] = None) -> Optional[Case]:
        """The case to show now (the same one until it is answered), or None when all are answered; `show` is the
        host viewer's show_case, called before the case counts as on screen."""
        if self._cursor >= len(self.order):
            return None
        return self._show(self._cursor, show)

    def previous_case(self, show: Optional[Show] = None) -> Case:
        """Step back one case to revise it (sessions that allow going back); answering it returns to the
        first unanswered case. `show` is as for `next_case`."""
        if not self.allow_back:
            raise InputError("this session does not allow going back: answer the case on screen")
        if self._cursor == 0:
            raise InputError("this is the first case: there is no case before it")
        case = self._show(self._cursor - 1, show)
        self._cursor -= 1
        return case

    def _hide(self) -> None:
        """Journal how long the case on screen was seen when it leaves the screen without an answer (going back,
        closing), so that a case shown again keeps counting from there."""
        if self._shown_id is not None:
            seen = time.monotonic() - self._shown_at
            self._record({"event": "hide", "case": self._shown_id, "viewed_s": round(seen, 3)})
            self.viewed_before[self._shown_id] = self.viewed_before.get(self._shown_id, 0.0) + seen
        self._shown_id = None

    def _viewed_s(self) -> float:
        """How long the case on screen has been seen in all, this view and earlier ones."""
        assert self._shown_id is not None
        return self.viewed_before.get(self._shown_id, 0.0) + time.monotonic() - self._shown_at

    def time_left_s(self) -> Optional[float]:
        """Seconds left on the current case's time limit (negative once over), counting every earlier view of the
        case, or None without a limit."""
        if self.time_limit_s is None or self._shown_id is None:
            return None
        return self.time_limit_s - self._viewed_s()

    def answer(self, case_id: str, call: str, confidence: int, comment: str = "") -> Answer:
        """Record a call on the case on screen; it is on disk when this returns."""
        if case_id != self._shown_id or self._cursor >= len(self.order) or self.order[self._cursor] != case_id:
            raise InputError(f"{case_id} is not the case on screen: call next_case() and answer the case it returns")
        if len(str(comment)) > MAX_COMMENT:
            raise InputError(f"the comment has {len(comment)} characters: keep it under {MAX_COMMENT}")
        elapsed = self._viewed_s()
        limit = self.time_limit_s
        answer = Answer(case_id, check_call(call), check_confidence(confidence), str(comment), round(elapsed, 3),
                        limit is not None and elapsed > limit)
        self._record({"event": "answer", "case": case_id, "call": answer.call, "confidence": answer.confidence,
                      "comment": answer.comment, "elapsed_s": answer.elapsed_s, "over_limit": answer.over_limit})
        self.answers[case_id] = answer
        self.viewed_before[case_id] = elapsed  # going back to the case goes on counting from here
        self._shown_id = None
        self._cursor = self._first_unanswered()
        return answer

    def progress(self) -> Progress:
        """Answered count, total, and the 1-based number of the case on screen (None when done)."""
        current = self._cursor + 1 if self._cursor < len(self.order) else None
        return Progress(len(self.answers), len(self.order), current)

    def close(self) -> None:
        """Journal how long an unanswered case on screen was seen, then release the journal; answers already given
        are on disk (if that last record cannot be written, the journal is released all the same)."""
        try:
            self._hide()
        finally:
            self._journal.close()
