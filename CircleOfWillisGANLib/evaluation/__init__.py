"""Evaluation of generated volumes against real ones: the paper's metrics (MD, 2D FID, AUC-PRD), kNN
precision/recall and density/coverage, diversity, memorisation, vessel morphology and TopCoW variants."""

from __future__ import annotations

from .distances import frechet_distance
from .knn import density_coverage, precision_recall
from .prd import f_beta_scores, prd, prd_auc

__all__ = ["frechet_distance", "prd", "prd_auc", "f_beta_scores", "density_coverage", "precision_recall"]
