"""Precision and recall for distributions (PRD, Sajjadi et al. 2018): clustering, curve, F_8 / F_1/8, AUC."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..checks import whole_number
from ..errors import InputError, require
from ..latents import check_seed
from .distances import as_feature_matrix

EPSILON = 1e-10


def prd_curve(eval_dist: np.ndarray, ref_dist: np.ndarray, num_angles: int = 1001) -> Tuple[np.ndarray, np.ndarray]:
    """PRD curve of two discrete distributions over the same bins, on `num_angles` equally spaced angles
    in (0, pi/2): precision(l) = sum min(l * ref, eval), recall(l) = precision(l) / l."""
    if not 3 <= num_angles <= 1_000_000:
        raise InputError(f"num_angles must be in [3, 1e6], got {num_angles}")
    e = np.asarray(eval_dist, dtype=np.float64)
    r = np.asarray(ref_dist, dtype=np.float64)
    if e.shape != r.shape or e.ndim != 1:
        raise InputError(f"the two distributions must be 1D over the same bins, got shapes {e.shape} and {r.shape}")
    slopes = np.tan(np.linspace(EPSILON, np.pi / 2 - EPSILON, num_angles))
    precision = np.minimum(r[None, :] * slopes[:, None], e[None, :]).sum(axis=1)
    recall = precision / slopes
    return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def cluster_histograms(eval_features: np.ndarray, ref_features: np.ndarray, num_clusters: int,
                       seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cluster the union of both sets with mini-batch k-means (10 inits, as the reference) and return each
    set's normalised histogram over the clusters."""
    cluster = require("sklearn.cluster", "PRD (k-means clustering)", "scikit-learn")
    data = np.vstack([eval_features, ref_features])
    labels = cluster.MiniBatchKMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(data).labels_
    n = len(eval_features)
    e = np.bincount(labels[:n], minlength=num_clusters) / n
    r = np.bincount(labels[n:], minlength=num_clusters) / (len(labels) - n)
    return e, r


def prd(eval_features: np.ndarray, ref_features: np.ndarray, num_clusters: int = 20, num_angles: int = 1001,
        num_runs: int = 10, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """PRD curve of generated (`eval_features`) against real (`ref_features`) (N, F) features, averaged over
    `num_runs` clusterings seeded seed, seed + 1, ...; both sets must have the same number of samples."""
    num_clusters = whole_number(num_clusters, "num_clusters", 1)
    num_runs = whole_number(num_runs, "num_runs", 1)
    check_seed(check_seed(seed) + num_runs - 1)  # the last run's clustering seed too
    e = as_feature_matrix(eval_features, "eval_features", num_clusters)
    r = as_feature_matrix(ref_features, "ref_features", num_clusters)
    if len(e) != len(r):
        raise InputError(f"PRD needs sets of equal size (got {len(e)} and {len(r)}), since unequal sets bias the "
                         "clustering: subsample the larger set")
    curves = [prd_curve(*cluster_histograms(e, r, num_clusters, seed + run), num_angles) for run in range(num_runs)]
    return np.mean([c[0] for c in curves], axis=0), np.mean([c[1] for c in curves], axis=0)


def prd_auc(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the PRD curve with recall on the x axis, by trapezoids between neighbouring points of the curve.

    The points are taken in the curve's own order, by their angle (precision / recall is the curve's lambda),
    from high precision to high recall. The paper sorts by recall, which gives the same area except where recall
    ties or nearly ties (a curve's vertical edge): there its order is arbitrary and the area up to 1e-3 low."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.ndim != 1 or p.shape != r.shape or len(p) < 2:
        raise InputError(f"a PRD curve is two 1D arrays of one length (at least 2 points), as prd() returns; got "
                         f"shapes {p.shape} and {r.shape}")
    order = np.argsort(-np.arctan2(p, r), kind="stable")
    p, r = p[order], r[order]
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2.0))


def f_beta_scores(precision: np.ndarray, recall: np.ndarray, beta: float = 8.0) -> Tuple[float, float]:
    """(max F_beta, max F_1/beta) over the curve, as Sajjadi et al. report them: F_8 tracks recall (coverage
    of the real data), F_1/8 tracks precision (quality of the generated samples)."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)

    def f(b: float) -> float:
        return float(np.max((1 + b ** 2) * p * r / (b ** 2 * p + r + EPSILON)))

    return f(beta), f(1.0 / beta)
