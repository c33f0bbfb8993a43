"""Ctrl-C with worker processes: only the parent stops, cleanly, instead of every worker printing a traceback."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, List


def ignore_ctrl_c() -> None:
    """A worker process's initializer: Ctrl-C reaches the whole process group, and the parent handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def ctrl_c_held_from_new_processes() -> Iterator[None]:
    """Processes started inside this block start with Ctrl-C blocked (until their initializer ignores it), and a
    Ctrl-C pressed meanwhile reaches the parent as the block ends instead of being lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: List[int] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    masked = hasattr(signal, "pthread_sigmask")  # the mask travels into forked and spawned processes
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
    try:
        yield
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if held and callable(previous):
        previous(signal.SIGINT, None)
    elif held and previous != signal.SIG_IGN:
        raise KeyboardInterrupt
