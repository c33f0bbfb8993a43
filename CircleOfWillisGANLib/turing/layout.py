"""Names of a session folder's parts, and reading its rater-facing case list.

    SESSION/session.json       rater-facing: neutral case ids and display settings, nothing about sources
    SESSION/cases/case-001.nii one normalised uint8 NIfTI per case, all with identical headers
    SESSION/journal/RATER.jsonl one append-only journal per rater
    SESSION/answer_key.json    organiser-only (may be moved elsewhere); rater-side code never opens it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

from ..errors import InputError

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
    if not isinstance(session, dict) or session.get("format") != SESSION_FORMAT or session.get("version") != FORMAT_VERSION:
        raise InputError(f"{path} is not a version-{FORMAT_VERSION} session file: recreate the session "
                         "with this version of CircleOfWillisGAN")
    cases = session.get("cases")
    if (not isinstance(cases, list) or not cases or not all(isinstance(c, str) for c in cases)
            or not isinstance(session.get("display"), str)):
        raise InputError(f"{path} is damaged (its case list or display is missing or malformed): restore it from the organiser's copy")
    return session
