"""k-nearest-neighbour fidelity and diversity: improved precision/recall (Kynkäänniemi et al. 2019) and
density/coverage (Naeem et al. 2020), with the strict `<` ball test of the authors' code."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..checks import whole_number
from ..errors import InputError
from .distances import as_feature_matrix


def _pairwise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(x, y, metric="euclidean")


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample to its k-th nearest other sample of the same set."""
    k = whole_number(k, "k (the neighbour whose distance is a sample's radius)", 1)
    x = as_feature_matrix(features, "features", k + 1)
    return np.sort(_pairwise(x, x), axis=1)[:, k]


def _check(real: np.ndarray, fake: np.ndarray, k: int, fake_rows: int) -> Tuple[np.ndarray, np.ndarray]:
    k = whole_number(k, "k (the neighbour whose distance is a sample's radius)", 1)
    r = as_feature_matrix(real, "real features", k + 1)
    f = as_feature_matrix(fake, "generated features", fake_rows)
    if r.shape[1] != f.shape[1]:
        raise InputError(f"feature sets differ in width ({r.shape[1]} vs {f.shape[1]}): extract both with the same extractor")
    return r, f


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> Tuple[float, float]:
    """Improved precision (share of generated samples inside the real manifold) and recall (share of real
    samples inside the generated manifold); each manifold is the union of k-NN balls around its samples."""
    r, f = _check(real, fake, k, k + 1)
    d = _pairwise(r, f)
    precision = float(np.mean(np.any(d < knn_radii(r, k)[:, None], axis=0)))
    recall = float(np.mean(np.any(d < knn_radii(f, k)[None, :], axis=1)))
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> Tuple[float, float]:
    """Density (mean number of real k-NN balls holding each generated sample, divided by k; ~1 when the sets
    match, above 1 for samples crowded where real data is dense) and coverage (share of real samples whose
    k-NN ball holds at least one generated sample)."""
    r, f = _check(real, fake, k, 1)
    d = _pairwise(r, f)
    inside = d < knn_radii(r, k)[:, None]
    density = float(inside.sum(axis=0).mean() / k)
    coverage = float(np.mean(inside.any(axis=1)))
    return density, coverage
