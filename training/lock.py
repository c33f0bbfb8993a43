"""One `cowgan train` at a time per run folder: an advisory lock on RUN/.lock, held by the main process.

The lock is flock's, which goes with the process: a run that crashed or was killed never leaves its folder locked.
Without fcntl (Windows) nothing is locked, and one run per folder is the user's rule.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from CircleOfWillisGANLib.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LOCK = ".lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, enabled: bool = True) -> Iterator[bool]:
    """Hold RUN/.lock for the block and yield True, or yield False while another process holds it.

    The folder is created if needed; a folder or lock file left holding nothing else when the block ends (a run
    refused before it started) is removed again. `enabled` False (processes other than the main one) locks nothing.
    """
    if fcntl is None or not enabled:
        yield True
        return
    run_dir = Path(run_dir)
    created = _outermost_missing(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = _acquire(run_dir / LOCK)
    except OSError as exc:
        raise OutputError(f"cannot create the run folder's lock {run_dir / LOCK}: {exc.strerror or exc}; choose a "
                          "writable --out") from exc
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        _remove_if_unused(run_dir, created)  # while still locked, so no other run takes a file about to go
        os.close(fd)


def lock_owner(run_dir: Path) -> str:
    """The host and process that hold (or last held) the run folder's lock, as words for an error; '' if unknown."""
    try:
        host, pid = (run_dir / LOCK).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    return f"process {pid} on {host}"


def _acquire(path: Path) -> Optional[int]:
    """An open, locked descriptor of `path`, or None while another process holds the lock."""
    while True:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:  # storage without locks (some network file systems): run as without fcntl
            log.warning("cannot lock %s (%s): nothing stops a second `cowgan train` on this folder", path,
                        exc.strerror or exc)
            return fd
        if _is_file_at(fd, path):
            _record_owner(fd)
            return fd
        os.close(fd)  # a run that let go removed this file meanwhile: lock the one now at `path`


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _record_owner(fd: int) -> None:
    """Write this host and process into the lock file, for the message of a run refused meanwhile."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode("utf-8"))


def _outermost_missing(path: Path) -> Optional[Path]:
    """The outermost of `path` and its parents that does not exist yet (what creating `path` creates); None if none."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_if_unused(run_dir: Path, created: Optional[Path]) -> None:
    """Remove the lock file if the folder holds nothing else, and the folders up to `created` that this run made."""
    with contextlib.suppress(OSError):
        if [entry.name for entry in run_dir.iterdir()] == [LOCK]:
            (run_dir / LOCK).unlink()
            folder = run_dir
            while created is not None and folder != created.parent:
                folder.rmdir()
                folder = folder.parent
