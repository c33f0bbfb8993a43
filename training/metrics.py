"""Metrics of a run while it trains: the evaluation module's weight-free morphology features of EMA samples
against real volumes, as a Fréchet distance that should fall as the generator learns vessel structure."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from CircleOfWillisGANLib.evaluation import frechet_distance
from CircleOfWillisGANLib.evaluation.distances import standardise
from CircleOfWillisGANLib.evaluation.morphology import features_to_vector, morphology_features
from CircleOfWillisGANLib.errors import require

from .dataset import RealVolumes

REAL_VOLUMES = 32


class MorphologyDistance:
    """Fréchet distance of z-scored morphology features, generated vs a fixed subset of the real set."""

    def __init__(self, data: RealVolumes, spacing_mm: Sequence[float], count: int = REAL_VOLUMES) -> None:
        for module, package in (("scipy", "scipy"), ("skimage", "scikit-image")):  # checked before training starts
            require(module, "Training (its snapshot metrics)", package)
        self.data = data
        self.spacing = tuple(float(s) for s in spacing_mm)
        self.count = min(count, data.count)
        self._real: Optional[np.ndarray] = None

    def _features(self, volumes: np.ndarray) -> np.ndarray:
        return np.stack([features_to_vector(morphology_features(v, self.spacing)) for v in volumes])

    def real_features(self) -> np.ndarray:
        """Features of the first `count` real volumes, computed once."""
        if self._real is None:
            indices = torch.linspace(0, self.data.count - 1, self.count).round().long()
            volumes = self.data.gather(indices)[:, 0].cpu().numpy()
            self._real = self._features(volumes)
        return self._real

    def __call__(self, generated: np.ndarray) -> float:
        """The distance for (N, D, H, W) generated volumes in [0, 1]; needs N >= 2."""
        real, fake = standardise(self.real_features(), self._features(generated))
        return frechet_distance(fake, real)
