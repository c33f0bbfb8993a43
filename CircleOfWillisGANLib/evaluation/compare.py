"""All set-level distances between two feature sets, each guarded so that a set too small for one metric
skips that metric with a reason instead of failing the whole evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

import numpy as np

from ..errors import InputError
from .distances import frechet_distance
from .knn import density_coverage, precision_recall
from .prd import f_beta_scores, prd, prd_auc


@dataclass(frozen=True)
class CompareConfig:
    """The paper's PRD settings (10 clusters, 10 runs, 1001 angles) and the usual k of the kNN metrics."""

    prd_clusters: int = 10
    prd_runs: int = 10
    prd_angles: int = 1001
    pr_k: int = 3
    dc_k: int = 5
    seed: int = 0


def guarded(function: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run one metric; an InputError (too few samples...) becomes {"skipped": reason}."""
    try:
        return function()
    except InputError as exc:
        return {"skipped": str(exc)}


def balanced(eval_features: np.ndarray, ref_features: np.ndarray, seed: int) -> tuple:
    """Subsample the larger set (seeded, without replacement) so that PRD's clustering sees equal sets."""
    n = min(len(eval_features), len(ref_features))
    rng = np.random.default_rng(seed)
    pick = lambda x: x if len(x) == n else x[np.sort(rng.choice(len(x), n, replace=False))]  # noqa: E731
    return pick(eval_features), pick(ref_features)


def prd_metrics(fake: np.ndarray, real: np.ndarray, config: CompareConfig) -> Dict[str, Any]:
    """PRD curve, AUC (the paper's number), F_8 and F_1/8 of generated against real features."""
    e, r = balanced(fake, real, config.seed)
    if len(e) < config.prd_clusters:
        raise InputError(f"PRD with {config.prd_clusters} clusters needs at least {config.prd_clusters} volumes per set "
                         f"(got {len(e)}): evaluate more volumes or lower --prd-clusters")
    precision, recall = prd(e, r, config.prd_clusters, config.prd_angles, config.prd_runs, config.seed)
    f8, f1_8 = f_beta_scores(precision, recall, 8.0)
    return {"auc": prd_auc(precision, recall), "f8_recall": f8, "f1_8_precision": f1_8, "n_per_set": len(e),
            "clusters": config.prd_clusters, "runs": config.prd_runs, "angles": config.prd_angles,
            "curve": {"precision": precision.round(6).tolist(), "recall": recall.round(6).tolist()}}


def compare_features(real: np.ndarray, fake: np.ndarray, config: CompareConfig) -> Dict[str, Any]:
    """Fréchet distance, PRD, improved precision/recall and density/coverage of `fake` against `real`."""
    def pr() -> Dict[str, Any]:
        p, r = precision_recall(real, fake, config.pr_k)
        return {"precision": p, "recall": r, "k": config.pr_k}

    def dc() -> Dict[str, Any]:
        d, c = density_coverage(real, fake, config.dc_k)
        return {"density": d, "coverage": c, "k": config.dc_k}

    return {"n_real": int(len(real)), "n_generated": int(len(fake)),
            "frechet_distance": guarded(lambda: {"value": frechet_distance(real, fake)}),
            "prd": guarded(lambda: prd_metrics(fake, real, config)),
            "precision_recall": guarded(pr), "density_coverage": guarded(dc)}
