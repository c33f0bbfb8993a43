"""On-disk cache of per-volume features, keyed by the volume's content hash and the extractor's settings,
so that re-evaluating against the same real set only computes features of new volumes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from ..errors import OutputError
from ..files import atomic_write

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/cowgan/features, or ~/.cache/cowgan/features."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cowgan" / "features"


def extractor_key(name: str, settings: Dict[str, Any]) -> str:
    """A short stable id of an extractor and its settings (changing a setting changes the key)."""
    text = json.dumps({"name": name, **settings}, sort_keys=True)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class FeatureCache:
    """Features stored as `.npy` files under root/<extractor key>/<content hash>.npy; root None disables it."""

    def __init__(self, root: Optional[Path]) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, extractor: str, content_hash: str) -> Optional[Path]:
        return None if self.root is None else self.root / extractor / f"{content_hash}.npy"

    def get_or_compute(self, extractor: str, content_hash: str, compute: Callable[[], np.ndarray],
                       shape: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
        """The cached features, or compute, store and return them; a damaged cache file (unreadable, not finite
        real numbers, or not of `shape`, where None matches any length) is recomputed."""
        path = self._path(extractor, content_hash)
        if path is not None and path.is_file():
            try:
                value = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                value = None
            if _usable(value, shape):
                self.hits += 1
                return value
            log.warning("the feature cache entry %s is damaged: computing it again", path)
        self.misses += 1
        value = np.asarray(compute())
        if path is not None:
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
            except (OSError, OutputError) as exc:  # the cache only saves time: the evaluation goes on without it
                log.warning("cannot write the feature cache in %s (%s): evaluating without it; pass --cache DIR for "
                            "a writable folder, or --no-cache", self.root, getattr(exc, "strerror", None) or exc)
                self.root = None
        return value


def _usable(value: Optional[np.ndarray], shape: Optional[Sequence[Optional[int]]]) -> bool:
    """Whether a loaded cache entry holds finite real numbers of the expected shape, so it can stand for features."""
    if value is None or value.dtype.kind not in "fiu" or not np.isfinite(value).all():
        return False
    if shape is None:
        return True
    return value.ndim == len(shape) and all(want is None or want == got for want, got in zip(shape, value.shape))
