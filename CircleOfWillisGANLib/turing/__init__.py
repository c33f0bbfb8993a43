"""Visual Turing tests of generated volumes: blinded sessions, durable rater journals, honest statistics.

Organisers call `TuringSession.create`, raters `TuringSession.open(folder, rater)` and then `next_case`,
`answer` and `progress`; `report(folder)` joins the journals with the answer key.
"""

from .config import DISPLAYS, SessionConfig
from .create import CreatedSession
from .grid import DisplayGrid
from .rater import Answer, Case, Progress
from .report import TuringReport, build_report, write_report
from .session import TuringSession, report

__all__ = ["DISPLAYS", "Answer", "Case", "CreatedSession", "DisplayGrid", "Progress", "SessionConfig", "TuringReport",
           "TuringSession", "build_report", "report", "write_report"]
