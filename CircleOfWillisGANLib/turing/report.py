"""Results of a session: readings joined with the answer key, per-rater and pooled statistics, CSV files."""

from __future__ import annotations

import contextlib
import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..errors import InputError, OutputError
from ..outputs import output_folder, prepare_output_dir, refuse_overwrite
from ..files import atomic_write, file_sha256, is_within, staged_folder
from .config import CALLS, CONFIDENCE_LEVELS, POOLED
from .create import read_key
from .journal import read_journal
from .layout import KEY_FILE, SESSION_FILE, case_path, read_session
from .rater import Answer, latest_answers, of_session, own_records, rater_journals
from .stats import (Proportion, agreement_table, binom_test, cohen_kappa, fisher_exact, fleiss_kappa, p_value_text,
                    sample_size_note)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Reading:
    """One rater's final call on one case, with the truth."""

    rater: str
    case_id: str
    truth: str
    call: str
    confidence: int
    elapsed_s: float
    over_limit: bool
    comment: str

    @property
    def correct(self) -> bool:
        return self.truth == self.call


@dataclass(frozen=True)
class ReaderStats:
    """Accuracy and friends for one rater, or for all readings pooled."""

    name: str
    accuracy: Proportion
    p_value: Optional[float]
    sensitivity: Proportion
    specificity: Proportion
    by_confidence: Dict[int, Proportion]
    mean_time_s: Optional[float]
    median_time_s: Optional[float]
    over_limit: int
    called_fake: Proportion  # share of answers "Generated": a rater's bias, which moves accuracy off 50% when the
    discrimination_p: Optional[float]  # session is not 50:50; Fisher's exact test of truth x call ignores it

    @property
    def balanced_accuracy(self) -> Optional[float]:
        """Mean of sensitivity and specificity: 50% for a rater whose calls do not depend on the truth."""
        if self.sensitivity.value is None or self.specificity.value is None:
            return None
        return (self.sensitivity.value + self.specificity.value) / 2.0


@dataclass(frozen=True)
class CaseResult:
    """How often one case was called wrongly, and (organiser-only) where it came from."""

    case_id: str
    truth: str
    readings: int
    wrong: int
    source: str


@dataclass
class TuringReport:
    """Everything `write_report` puts in the CSV and HTML files."""

    session: Path
    n_cases: int
    n_real: int
    n_fake: int
    readings: List[Reading]
    raters: List[ReaderStats]
    pooled: ReaderStats
    answered: Dict[str, int]
    agreement: Optional[Tuple[str, Optional[float], int]]
    cases: List[CaseResult]
    note: str
    problems: List[str] = field(default_factory=list)


def reader_stats(name: str, readings: List[Reading]) -> ReaderStats:
    """Accuracy with exact binomial test against 50%, sensitivity and specificity for 'fake', how often 'fake' was
    called and Fisher's exact test of truth x call (whether the calls depend on the truth at all), accuracy by
    confidence, time."""
    correct = sum(r.correct for r in readings)
    fakes = [r for r in readings if r.truth == "fake"]
    reals = [r for r in readings if r.truth == "real"]
    times = [r.elapsed_s for r in readings]
    fake_called_fake, real_called_fake = sum(r.call == "fake" for r in fakes), sum(r.call == "fake" for r in reals)
    return ReaderStats(
        name, Proportion(correct, len(readings)), binom_test(correct, len(readings)) if readings else None,
        Proportion(fake_called_fake, len(fakes)),
        Proportion(len(reals) - real_called_fake, len(reals)),
        {c: Proportion(sum(r.correct for r in readings if r.confidence == c), sum(r.confidence == c for r in readings))
         for c in CONFIDENCE_LEVELS},
        statistics.fmean(times) if times else None, statistics.median(times) if times else None,
        sum(r.over_limit for r in readings), Proportion(fake_called_fake + real_called_fake, len(readings)),
        fisher_exact(fake_called_fake, len(fakes) - fake_called_fake, real_called_fake, len(reals) - real_called_fake)
        if readings else None)


def build_report(session: PathLike, key: Optional[PathLike] = None) -> TuringReport:
    """Join every rater's journal with the answer key and compute the statistics."""
    folder = Path(session)
    description = read_session(folder)
    key_data, truth = read_key(Path(key) if key else folder / KEY_FILE)
    case_ids = list(description["cases"])
    _check_key_matches(folder, case_ids, key_data, description.get("session_id"))
    readings: List[Reading] = []
    answered: Dict[str, int] = {}
    journals, problems = rater_journals(folder, description)
    problems += _settings_changed(folder, key_data)
    allow_back, limit = _settings_made(key_data, description)
    for rater, path in journals:
        answers, journal_problems = _journal_answers(path, rater, case_ids, description.get("session_id"), allow_back)
        problems += journal_problems
        answered[rater] = len(answers)
        readings += [Reading(rater, cid, truth[cid], a.call, a.confidence, a.elapsed_s,
                             a.over_limit or (limit is not None and a.elapsed_s > limit), a.comment)
                     for cid, a in sorted(answers.items())]
    names = _rater_names(description.get("raters") or [], answered)
    answered = {name: answered.get(name, 0) for name in names}
    problems += _unfinished(answered, len(case_ids))
    calls = {r: {x.case_id: x.call for x in readings if x.rater == r} for r in names if answered[r]}
    raters = [reader_stats(r, [x for x in readings if x.rater == r]) for r in names]
    pooled = reader_stats(POOLED, readings)
    sources = {c["id"]: _describe_source(c.get("source", {})) for c in key_data["cases"]}
    cases = [CaseResult(cid, truth[cid], sum(r.case_id == cid for r in readings),
                        sum(r.case_id == cid and not r.correct for r in readings), sources.get(cid, ""))
             for cid in case_ids]
    cases.sort(key=lambda c: (-(c.wrong / c.readings if c.readings else 0.0), -c.readings, c.case_id))
    return TuringReport(folder, len(case_ids), sum(t == "real" for t in truth.values()),
                        sum(t == "fake" for t in truth.values()), readings, raters, pooled, answered,
                        _agreement(calls), cases, sample_size_note(pooled.accuracy.k, pooled.accuracy.n), problems)


def _settings_made(key_data: Dict, description: Dict) -> Tuple[bool, Optional[float]]:
    """Whether raters could go back, and the time limit (None: none), as the session was made: from the answer key,
    which raters never see, so that a session.json edited afterwards changes neither; older keys lack them."""
    made = key_data.get("settings") if isinstance(key_data.get("settings"), dict) else {}
    allow_back = made.get("allow_back") if isinstance(made.get("allow_back"), bool) else description.get("allow_back")
    limit = made["time_limit_s"] if "time_limit_s" in made else description.get("time_limit_s")
    usable = isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 < limit < float("inf")
    return bool(allow_back), float(limit) if usable else None


def _journal_answers(path: Path, rater: str, case_ids: List[str], session_id: Optional[str],
                     allow_back: bool) -> Tuple[Dict[str, Answer], List[str]]:
    """A rater's latest answer to each case from their journal, and the journal's problems, each naming the file."""
    contents = read_journal(path)
    records, foreign = own_records(contents.records, rater)
    answers, bad = latest_answers(records, case_ids, session_id)
    repeated = _answered_twice(path.name, [r for r in records if of_session(r, session_id)], allow_back)
    return answers, contents.problems + [f"{path.name}: {b}" for b in foreign + bad] + repeated


def _rater_names(listed: List[str], answered: Dict[str, int]) -> List[str]:
    """Every rater the report covers, in id order: those the session lists, whether or not they opened it, and any
    other rater with a journal (in a session open to any id)."""
    return sorted(set(listed) | set(answered))


def _unfinished(answered: Dict[str, int], n_cases: int) -> List[str]:
    """A problem for each rater who answered none or only some of the cases, so that a short row is not mistaken for
    a finished reader."""
    return [f"rater {rater} answered {'none' if count == 0 else count} of the {n_cases} cases"
            for rater, count in answered.items() if count < n_cases]


def _settings_changed(folder: Path, key_data: Dict) -> List[str]:
    """A problem if session.json (the time limit, going back, the rater list) differs from the one the session was
    made with: the raters share the folder and could have edited it."""
    made = key_data.get("session_file_sha256")
    if made and file_sha256(folder / SESSION_FILE) != made:
        return [f"{SESSION_FILE} was changed after the session was made (its time limit, going back or rater list may "
                "not be what was set): compare it with the organiser's copy"]
    return []


def _answered_twice(journal: str, records: List[Dict], allow_back: bool) -> List[str]:
    """A problem if a journal answers a case more than once in a session without going back: the rater window
    cannot do that, so lines were added by hand; the last answer of each case is the one counted."""
    if allow_back:
        return []
    cases = [r["case"] for r in records if r.get("event") == "answer" and isinstance(r.get("case"), str)]
    repeated = len(cases) - len(set(cases))
    if not repeated:
        return []
    return [f"{journal}: {repeated} answer(s) repeat a case already answered, which the rater window cannot write "
            "in a session without going back; the last answer of each case was counted"]


def _check_key_matches(folder: Path, case_ids: List[str], key_data: Dict, session_id: Optional[str]) -> None:
    if session_id and key_data.get("session_id") not in (None, session_id):
        raise InputError(f"the answer key belongs to another session than {folder}: pass the key made with this session")
    key_ids = [c["id"] for c in key_data["cases"]]
    if sorted(key_ids) != sorted(case_ids):
        raise InputError(f"the answer key lists other cases than session {folder}: pass the key made with this session")
    for case in key_data["cases"]:
        path = case_path(folder, case["id"])
        if path.is_file() and case.get("sha256") and file_sha256(path) != case["sha256"]:
            raise InputError(f"{path.name} differs from the volume the answer key was made for: the key belongs to "
                             "another session, or the case files were changed; pass the matching key")


def _describe_source(source: Dict) -> str:
    if "path" in source:
        return Path(source["path"]).name
    if "seed" in source:
        return f"seed {source['seed']} (psi {source.get('psi', 1.0):g})"
    return ""


def _agreement(calls: Dict[str, Dict[str, str]]) -> Optional[Tuple[str, Optional[float], int]]:
    """Cohen's kappa for two raters, Fleiss' kappa for more, on the cases every rater answered."""
    if len(calls) < 2:
        return None
    common, table = agreement_table(calls, CALLS)
    if not common:
        return ("Cohen's kappa" if len(calls) == 2 else "Fleiss' kappa", None, 0)
    if len(calls) == 2:
        a, b = list(calls.values())
        return "Cohen's kappa", cohen_kappa([a[c] for c in common], [b[c] for c in common]), len(common)
    return "Fleiss' kappa", fleiss_kappa(table), len(common)


REPORT_FILES = ("summary.csv", "readings.csv", "cases.csv", "report.html")


def default_report_dir(session: PathLike) -> Path:
    """Beside the session folder, never inside it, so raters on the shared folder never see results."""
    folder = Path(session).resolve()
    return folder.with_name(f"{folder.name}-report")


def report_dir(session: PathLike, out: Optional[PathLike] = None) -> Path:
    """The folder a report of `session` goes to (`out`, or beside the session); refused inside the session folder,
    which the raters share, as the report would show them the answers."""
    session = Path(session).resolve()
    target = Path(out).resolve() if out else default_report_dir(session)
    if is_within(target, session):
        raise OutputError(f"--out {out} is inside the session folder {session}, which the raters share: the report "
                          f"would show them the answers; choose a folder outside it (default {default_report_dir(session)})")
    return target


def existing_report_files(folder: PathLike) -> List[str]:
    """The report files `folder` already holds, so that no earlier report (or a user's file of the same name) is
    replaced without being asked for."""
    folder = Path(folder)
    return [name for name in REPORT_FILES if (folder / name).exists()] if folder.is_dir() else []


def write_report(report: TuringReport, out: Optional[PathLike] = None, overwrite: bool = False) -> Dict[str, Path]:
    """Write readings.csv, summary.csv, cases.csv and a self-contained report.html; return their paths.

    Report files already in the folder are refused unless `overwrite`; then all four are written to a stage first
    and replace the old ones only once each is whole, so a failure leaves the earlier report as it was."""
    from .report_html import render_html

    target = report_dir(report.session, out)
    refuse_overwrite(target, REPORT_FILES, overwrite)
    html = render_html(report)
    tables = {
        "readings": (["rater", "case", "truth", "call", "correct", "confidence", "time_s", "over_limit", "comment"],
                     [[r.rater, r.case_id, r.truth, r.call, int(r.correct), r.confidence, f"{r.elapsed_s:.3f}",
                       int(r.over_limit), spreadsheet_text(r.comment)] for r in report.readings]),
        "summary": (SUMMARY_HEADER,
                    [_summary_row(s, report.answered.get(s.name)) for s in report.raters + [report.pooled]]),
        "cases": (["case", "truth", "readings", "wrong", "wrong_fraction", "source"],
                  [[c.case_id, c.truth, c.readings, c.wrong, _fmt(c.wrong / c.readings if c.readings else None),
                    spreadsheet_text(c.source)] for c in report.cases]),
    }
    prepare_output_dir(target, create=False)  # a file in the way or a read-only folder is named before any writing
    parents = contextlib.nullcontext(target) if target.is_dir() else output_folder(target.parent)
    with parents, staged_folder(target) as stage:
        for name, (header, rows) in tables.items():
            _write_csv(stage / f"{name}.csv", header, rows)
        atomic_write(stage / "report.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return {**{name: target / f"{name}.csv" for name in tables}, "html": target / "report.html"}


SUMMARY_HEADER = ["rater", "answered", "readings", "correct", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "p_value",
                  "sensitivity_fake", "specificity_fake", "balanced_accuracy", "called_fake", "p_value_truth_x_call"] + [f"accuracy_confidence_{c}" for c in CONFIDENCE_LEVELS] + [
                  f"readings_confidence_{c}" for c in CONFIDENCE_LEVELS] + ["mean_time_s", "median_time_s", "over_limit"]


def _summary_row(s: ReaderStats, answered: Optional[int]) -> List[object]:
    lo, hi = s.accuracy.ci if s.accuracy.n else (None, None)  # no readings: no interval, as no accuracy
    return ([s.name, "" if answered is None else answered, s.accuracy.n, s.accuracy.k, _fmt(s.accuracy.value), _fmt(lo),
             _fmt(hi), _fmt(s.p_value), _fmt(s.sensitivity.value), _fmt(s.specificity.value), _fmt(s.balanced_accuracy),
             _fmt(s.called_fake.value), _fmt(s.discrimination_p)]
            + [_fmt(s.by_confidence[c].value) for c in CONFIDENCE_LEVELS]
            + [s.by_confidence[c].n for c in CONFIDENCE_LEVELS]
            + [_fmt(s.mean_time_s), _fmt(s.median_time_s), s.over_limit])


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """Free text (a rater's comment, a source file name) as a CSV cell that a spreadsheet shows as text: a cell
    starting with =, +, -, @, tab or carriage return would be run as a formula, so it gets a leading ' (OWASP)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6g}"


def _write_csv(path: Path, header: List[str], rows: List[List[object]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    return atomic_write(path, write)


def summary_text(result: TuringReport) -> str:
    """A plain-text summary of a report, for the panel and the command line."""
    lines = [f"{result.n_cases} cases ({result.n_real} real, {result.n_fake} generated), {len(result.readings)} readings"]
    for s in result.raters + [result.pooled]:
        if s.accuracy.n == 0:
            lines.append(f"{s.name}: no answers")
            continue
        lo, hi = s.accuracy.ci
        lines.append(f"{s.name}: accuracy {s.accuracy.value:.1%} ({s.accuracy.k}/{s.accuracy.n}, 95% CI {lo:.1%}-{hi:.1%}), "
                     f"{p_value_text(s.p_value)}; sensitivity {_pct(s.sensitivity.value)}, specificity {_pct(s.specificity.value)}; "
                     f"called generated {_pct(s.called_fake.value)}, balanced accuracy {_pct(s.balanced_accuracy)} "
                     f"(truth x call, {p_value_text(s.discrimination_p)}); mean time {s.mean_time_s:.1f} s")
    if result.agreement:
        method, value, n = result.agreement
        lines.append(f"{method}: {'undefined' if value is None else f'{value:.3f}'} on {n} cases")
    lines.append(result.note)
    lines += [f"warning: {p}" for p in result.problems]
    return "\n".join(lines)


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1%}"
