"""One background thread for a GUI: queued tasks run in order, and a render request keeps only the newest one."""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Any, Callable, Deque, Optional, Tuple

from .errors import CoWGANError

log = logging.getLogger(__name__)


class Worker:
    """One background thread: queued tasks run in order; render requests keep only the newest one."""

    def __init__(self) -> None:
        self.results: "queue.Queue[Tuple[str, Any, Any]]" = queue.Queue()
        self._tasks: Deque[Tuple[str, Callable[..., Any]]] = collections.deque()
        self._render: Optional[Tuple[str, Callable[..., Any]]] = None
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="CircleOfWillisGAN worker", daemon=True)
        self._thread.start()

    def submit(self, kind: str, func: Callable[..., Any], newest_wins: bool = False) -> None:
        """Queue `func(progress)`; with newest_wins it replaces any render request not yet started."""
        with self._cond:
            if newest_wins:
                self._render = (kind, func)
            else:
                self._tasks.append((kind, func))
            self._cond.notify()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not (self._busy or self._tasks or self._render)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._tasks or self._render):
                    self._cond.wait()
                if self._stop:
                    return
                if self._tasks:
                    kind, func = self._tasks.popleft()
                else:
                    (kind, func), self._render = self._render, None  # type: ignore[misc]
                self._busy = True
            try:
                self.results.put((kind, func(lambda i, n: self.results.put(("progress", (i, n), None))), None))
            except Exception as exc:  # reported on the GUI thread, never raised in this thread
                if not isinstance(exc, CoWGANError):
                    log.exception("CircleOfWillisGAN: %s failed", kind)
                self.results.put((kind, None, exc))
            finally:
                with self._cond:
                    self._busy = False
