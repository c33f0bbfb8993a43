"""Distances between two sets of feature vectors: the Fréchet distance and per-feature 1D distances."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..errors import InputError


def as_feature_matrix(features: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    """Check that `features` is a finite (N, F) array with at least `min_rows` rows; return it as float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise InputError(f"{name} must be an (N, F) array of N feature vectors, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise InputError(f"{name} has {x.shape[0]} samples; this metric needs at least {min_rows}: evaluate more volumes")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinite values: check the input volumes")
    return x


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets (FID's formula).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the matrix square root is taken through a symmetric
    eigendecomposition, so singular covariances (fewer samples than features) give a finite, real result.
    """
    x = as_feature_matrix(a, "the first feature set", 2)
    y = as_feature_matrix(b, "the second feature set", 2)
    if x.shape[1] != y.shape[1]:
        raise InputError(f"feature sets differ in width ({x.shape[1]} vs {y.shape[1]}): extract both with the same extractor")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    root_x = _psd_sqrt(cov_x)
    cross = np.linalg.eigvalsh(root_x @ cov_y @ root_x)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    value = float(np.sum((mu_x - mu_y) ** 2) + np.trace(cov_x) + np.trace(cov_y) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def standardise(reference: np.ndarray, *others: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Z-score every set with the reference set's per-feature mean and standard deviation.

    Features that are constant in the reference keep unit scale, so they still count when another set differs.
    """
    ref = as_feature_matrix(reference, "the reference feature set")
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return tuple((as_feature_matrix(x, "a feature set") - mean) / std for x in (ref,) + others)


def univariate_distances(real: np.ndarray, fake: np.ndarray) -> Dict[str, float]:
    """Wasserstein-1 distance (in units of the real standard deviation) and the Kolmogorov-Smirnov statistic."""
    from scipy.stats import ks_2samp, wasserstein_distance

    r = np.asarray(real, dtype=np.float64).ravel()
    f = np.asarray(fake, dtype=np.float64).ravel()
    if r.size == 0 or f.size == 0:
        raise InputError("a distribution distance needs at least one value on each side")
    scale = float(np.std(r))
    w1 = float(wasserstein_distance(r, f))
    return {"wasserstein": w1, "wasserstein_in_real_sd": w1 / scale if scale > 1e-12 else float("inf") if w1 > 0 else 0.0,
            "ks": float(ks_2samp(r, f).statistic)}
