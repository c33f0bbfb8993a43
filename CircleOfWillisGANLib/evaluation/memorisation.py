"""Memorisation check: for each generated volume, its highest Pearson correlation with any training volume
(or that volume mirrored left-right, as training flips), compared with the same for held-out real volumes.
A model that copies training data gives generated volumes closer to the training set than real volumes are.

Correlations are computed on volumes mean-pooled 2x along each axis (16 x 64 x 64 for the paper's grid),
which keeps memory small for large training sets; a copy still correlates at ~1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import InputError

LR_AXIS = 1  # H = NIfTI i, the left-right axis of the (D, H, W) arrays


@dataclass(frozen=True)
class MemorisationConfig:
    """Near-copy rule: correlation at least `copy_threshold`, or above every held-out real volume's and at least
    `min_copy_correlation` (an average-looking volume correlates more with everything than real ones do, without
    being a copy of anything)."""

    copy_threshold: float = 0.95
    min_copy_correlation: float = 0.8
    pool: int = 2
    check_mirror: bool = True


def pooled(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool a (D, H, W) volume by `factor` along each axis (trailing voxels that do not fill a block are dropped)."""
    v = np.asarray(volume, dtype=np.float32)
    if factor <= 1:
        return v
    d, h, w = (s // factor for s in v.shape)
    if min(d, h, w) < 1:
        raise InputError(f"volume of shape {v.shape} is too small to pool by {factor}")
    v = v[: d * factor, : h * factor, : w * factor]
    return v.reshape(d, factor, h, factor, w, factor).mean(axis=(1, 3, 5))


def unit_vector(volume: np.ndarray) -> np.ndarray:
    """The volume centred and scaled to unit norm, flattened, so dot products are Pearson correlations."""
    x = np.asarray(volume, dtype=np.float64).ravel()
    x = x - x.mean()
    norm = np.linalg.norm(x)
    return (x / norm if norm > 0 else x).astype(np.float32)


@dataclass
class NearestMatches:
    """For each query volume: its best correlation with the training set, which training volume, mirrored or not."""

    correlation: np.ndarray
    train_index: np.ndarray
    mirrored: np.ndarray


@dataclass
class MatchAccumulator:
    """Streams training volumes past a fixed set of query volumes, keeping each query's best match."""

    queries: np.ndarray
    config: MemorisationConfig = field(default_factory=MemorisationConfig)

    def __post_init__(self) -> None:
        n = len(self.queries)
        self.best = np.full(n, -np.inf)
        self.index = np.full(n, -1, dtype=np.int64)
        self.mirrored = np.zeros(n, dtype=bool)
        self.count = 0

    def add(self, train_volume: np.ndarray) -> None:
        """Compare every query with one training volume (and its mirror image)."""
        variants = [(pooled(train_volume, self.config.pool), False)]
        if self.config.check_mirror:
            variants.append((np.flip(variants[0][0], axis=LR_AXIS), True))
        for volume, mirrored in variants:
            r = self.queries @ unit_vector(volume)
            better = r > self.best
            self.best[better] = r[better]
            self.index[better] = self.count
            self.mirrored[better] = mirrored
        self.count += 1

    def result(self) -> NearestMatches:
        """The best matches so far."""
        if self.count == 0:
            raise InputError("the training set is empty: pass --train with at least one volume")
        return NearestMatches(self.best.copy(), self.index.copy(), self.mirrored.copy())


def query_matrix(volumes: Iterable[np.ndarray], pool: int) -> np.ndarray:
    """Stack pooled unit vectors of the query volumes into an (N, V) matrix."""
    rows = [unit_vector(pooled(v, pool)) for v in volumes]
    if not rows:
        raise InputError("memorisation needs at least one query volume")
    return np.stack(rows)


def flag_near_copies(generated: np.ndarray, held_out: Optional[np.ndarray], config: MemorisationConfig) -> np.ndarray:
    """Generated volumes at copy_threshold or above, or closer to a training volume than any held-out real volume
    is while at least min_copy_correlation."""
    g = np.asarray(generated, dtype=np.float64)
    flags = g >= config.copy_threshold
    if held_out is not None and len(held_out):
        flags |= (g > float(np.max(held_out))) & (g >= config.min_copy_correlation)
    return flags


def summary(generated: np.ndarray, held_out: Optional[np.ndarray], flags: Sequence[bool]) -> dict:
    """Numbers for the report: medians, the share of generated volumes above the held-out 95th percentile
    (about 5% when nothing is memorised) and a one-sided Mann-Whitney p-value (generated closer than held-out)."""
    g = np.asarray(generated, dtype=np.float64)
    out = {"generated_median": float(np.median(g)), "generated_max": float(np.max(g)),
           "near_copies": int(np.sum(flags)), "near_copy_share": float(np.mean(flags))}
    if held_out is not None and len(held_out):
        from scipy.stats import mannwhitneyu

        h = np.asarray(held_out, dtype=np.float64)
        out.update({"held_out_median": float(np.median(h)), "held_out_max": float(np.max(h)),
                    "share_above_held_out_p95": float(np.mean(g > np.percentile(h, 95))),
                    "held_out_in_training": int(np.sum(h >= 0.99)),
                    "mann_whitney_p_generated_closer": float(mannwhitneyu(g, h, alternative="greater").pvalue)
                    if len(h) > 1 and len(g) > 1 else None})
    return out
