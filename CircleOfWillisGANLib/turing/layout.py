"""Names of a session folder's parts, and reading its rater-facing case list.

    SESSION/session.json       rater-facing: neutral case ids and display settings, nothing about sources
    SESSION/cases/case-001.nii one normalised uint8 NIfTI per case, all with identical headers
    SESSION/journal/RATER.jsonl one append-only journal per rater
    SESSION/answer_key.json    organiser-only (may be moved elsewhere); rater-side code never opens it
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Union

from ..errors import InputError
from .config import DISPLAYS, RATER_ID_PATTERN

SESSION_FILE = "session.json"
CASES_DIR = "cases"
JOURNAL_DIR = "journal"
KEY_FILE = "answer_key.json"
SESSION_FORMAT = "cowgan-turing-session"
KEY_FORMAT = "cowgan-turing-key"
FORMAT_VERSION = 1
CASE_SUFFIX = ".nii"


def case_id(index: int) -> str:
    """The neutral id of the case shown `index`-th in id order (0-based)."""
    return f"case-{index + 1:03d}"


def case_path(folder: Union[str, Path], cid: str) -> Path:
    """Where a case's display volume lives."""
    return Path(folder) / CASES_DIR / f"{cid}{CASE_SUFFIX}"


def check_case_file(path: Path) -> None:
    """Refuse a case file that cannot be shown whole (missing, or its header or voxels cut short by an interrupted
    copy or sync), naming it, so that no answer is taken for a case the rater did not see."""
    import nibabel as nib

    if not path.is_file():
        problem = "is missing from the session folder"
    else:
        try:
            image = nib.load(str(path))
            needed = image.dataobj.offset + math.prod(image.shape) * image.get_data_dtype().itemsize
            problem = "is damaged (cut short)" if path.stat().st_size < needed else ""
        except Exception:  # nibabel raises many types for damaged files
            problem = "is damaged (its header cannot be read)"
    if problem:
        raise InputError(f"case file {path.name} {problem}: ask the organiser to restore it "
                         "(the answers saved so far are kept)")


def journal_path(folder: Union[str, Path], rater: str) -> Path:
    """Where one rater's journal lives."""
    return Path(folder) / JOURNAL_DIR / f"{rater}.jsonl"


def read_session(folder: Union[str, Path]) -> Dict[str, Any]:
    """The rater-facing session description, checked for format and version."""
    path = Path(folder) / SESSION_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not a Turing test session (no {SESSION_FILE}): "
                         "pass the folder made by `cowgan turing create`")
    try:
        session = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is damaged ({exc}): restore it from the organiser's copy") from exc
    if not isinstance(session, dict) or session.get("format") != SESSION_FORMAT:
        raise InputError(f"{path} is not a Turing test session file: pass the folder made by `cowgan turing create`")
    version = session.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise InputError(f"{path} is a version-{version} session, newer than this software reads ({FORMAT_VERSION}): "
                         "upgrade CircleOfWillisGAN (the raters' answers are kept)")
    if version != FORMAT_VERSION:
        raise InputError(f"{path} is not a version-{FORMAT_VERSION} session file: recreate the session "
                         "with this version of CircleOfWillisGAN")
    problem = _session_problem(session)
    if problem:
        raise InputError(f"{path} is damaged ({problem}): restore it from the organiser's copy")
    return session


def _session_problem(session: Dict[str, Any]) -> str:
    """What is malformed in a session description ('' if nothing): hand edits must not change how cases are shown."""
    cases, raters, limit = session.get("cases"), session.get("raters", []), session.get("time_limit_s")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, str) for c in cases):
        return "its case list is missing or malformed"
    if len(set(cases)) != len(cases):
        return "its case list repeats a case"
    if session.get("display") not in DISPLAYS:
        return f"display {session.get('display')!r} is not one of {', '.join(DISPLAYS)}"
    if not isinstance(raters, list) or not all(isinstance(r, str) and RATER_ID_PATTERN.match(r) for r in raters):
        return "its rater list is not a list of rater ids"
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit < math.inf):
        return f"time limit {limit!r} is not a positive number of seconds"
    if not isinstance(session.get("allow_back", False), bool):
        return "allow_back is not true or false"
    if not isinstance(session.get("order_per_session", False), bool):
        return "order_per_session is not true or false"
    return ""
