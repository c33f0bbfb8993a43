"""Append-only, fsync'ed JSON-lines journal of one rater's events, tolerant of a damaged line.

Each line is one JSON object carrying a CRC-32 of its own content, so a line cut short by a crash or
altered on disk is recognised, reported and skipped while every other line is kept.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import InputError, OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one program per rater is then the organiser's rule
    fcntl = None  # type: ignore[assignment]


@dataclass
class JournalContents:
    """The valid records of a journal, in order, and one message per damaged line."""

    records: List[Dict[str, Any]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


def _checksum(record: Dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "crc"}, sort_keys=True, separators=(",", ":"))
    return format(zlib.crc32(body.encode("utf-8")), "08x")


def encode(record: Dict[str, Any]) -> bytes:
    """One journal line: compact JSON with its checksum, ending in a newline."""
    record = dict(record, crc=_checksum(record))
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def read_journal(path: Union[str, Path]) -> JournalContents:
    """Every intact record of a journal; damaged lines are named in `problems` and skipped."""
    path = Path(path)
    contents = JournalContents()
    if not path.exists():
        return contents
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            valid = isinstance(record, dict) and record.get("crc") == _checksum(record)
        except (UnicodeDecodeError, ValueError):
            valid = False
        if valid:
            record.pop("crc")
            contents.records.append(record)
        else:
            contents.problems.append(f"{path.name} line {number} is damaged and was skipped")
    return contents


class Journal:
    """An open journal file: `append` returns only once the record is on disk."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        new = not self.path.exists()
        try:
            self._fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot open the journal {self.path} ({exc.strerror}): "
                              "make the session folder writable for this rater") from exc
        self._lock()
        if new:
            _fsync_dir(self.path.parent)
        self._end_last_line()

    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None  # type: ignore[assignment]
            raise InputError(f"rater journal {self.path.name} is already open in another program: close that "
                             "rater window first, or use a different rater id") from None

    def _end_last_line(self) -> None:
        """After a crash mid-write the file may end without a newline; start new records on a fresh line."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                self._write(b"\n")

    def _write(self, data: bytes) -> None:
        """Write and fsync `data`, or raise an OutputError with the file cut back to its size before the write: a
        write that fails part-way (disk full) must not leave a partial line for the next record to be glued to."""
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            _cut_back(self._fd, size)
            raise OutputError(f"cannot write the journal {self.path} ({exc.strerror}): free disk space or make the "
                              "session folder writable, then try again") from exc

    def append(self, record: Dict[str, Any]) -> None:
        """Write one record, on a line of its own, and fsync it before returning."""
        if self._fd is None:
            raise OutputError(f"journal {self.path.name} is closed: reopen the session to record answers")
        self._end_last_line()
        self._write(encode(record))

    def close(self) -> None:
        """Release the file (and its lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None  # type: ignore[assignment]

    def __del__(self) -> None:
        fd: Optional[int] = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def _cut_back(fd: int, size: int) -> None:
    """Truncate a file to `size` after a failed write; if even that fails, the next append first ends the partial
    line, so only the failed record is lost."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
