"""Feature extractors over volume sets, with one read of each volume per pass and the on-disk cache."""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..mip import mip_panel
from .cache import FeatureCache, extractor_key
from .morphology import FEATURE_NAMES, FEATURES_VERSION, MorphologyConfig, features_to_vector, morphology_features
from .volumes import VolumeItem, VolumeSet, left_is_low_h

PREVIEW_VOLUMES = 8


class Extractor:
    """A named feature function of (normalised volume, item) with the settings that make up its cache key."""

    def __init__(self, name: str, settings: Dict[str, object], function: Callable[[np.ndarray, VolumeItem], np.ndarray],
                 shape: Tuple[Optional[int], ...]) -> None:
        self.name = name
        self.key = extractor_key(name, settings)
        self.function = function
        self.shape = shape  # of one volume's features (None: any length), so a damaged cache entry is recomputed


def morphology_extractor(volume_set: VolumeSet, config: MorphologyConfig) -> Extractor:
    """Vessel morphology + intensity features (FEATURE_NAMES order) on the set's voxel spacing and orientation."""
    spacing = volume_set.spacing()
    left_low = left_is_low_h(volume_set.affine)
    settings = {"version": FEATURES_VERSION, **asdict(config), "spacing": [round(s, 5) for s in spacing], "left_is_low_h": left_low}
    return Extractor("morphology", settings, lambda v, item: features_to_vector(
        morphology_features(v, spacing, left_low, config)), (len(FEATURE_NAMES),))


def medicalnet_extractor(model: object, weights_sha256: str, seed: int) -> Extractor:
    """MedicalNet ResNet-10 features with background noise seeded from (seed, volume hash)."""
    from .medicalnet import FEATURE_DIM, medicalnet_features, noise_seed

    return Extractor("medicalnet", {"version": 1, "weights": weights_sha256, "seed": seed},
                     lambda v, item: medicalnet_features(model, v, noise_seed(seed, item.key())),  # type: ignore[arg-type]
                     (FEATURE_DIM,))


def inception_extractor(model: Callable[[np.ndarray], np.ndarray], weights_sha256: str) -> Extractor:
    """2D InceptionV3 features of every axial slice, (D, 2048) per volume."""
    from .fid2d import POOL3_FEATURES

    return Extractor("inception2d", {"version": 1, "weights": weights_sha256}, lambda v, item: model(v),
                     (None, POOL3_FEATURES))


class SetFeatures:
    """Per-extractor feature arrays of one set, in item order, plus MIP previews of its first volumes."""

    def __init__(self) -> None:
        self.values: Dict[str, List[np.ndarray]] = {}
        self.previews: List[np.ndarray] = []

    def matrix(self, name: str, indices: Optional[Sequence[int]] = None) -> np.ndarray:
        """(N, F) features of extractor `name` (per-slice features are stacked to (N * D, F))."""
        rows = self.values[name] if indices is None else [self.values[name][i] for i in indices]
        return np.concatenate([np.atleast_2d(r) for r in rows], axis=0)


def extract(volume_set: VolumeSet, extractors: Sequence[Extractor], cache: FeatureCache,
            progress: bool = True) -> SetFeatures:
    """Run every extractor on every volume of the set, reading each volume at most once."""
    out = SetFeatures()
    for extractor in extractors:
        out.values[extractor.name] = []
    spacing = volume_set.spacing()
    for index, item in enumerate(tqdm(volume_set.items, desc=f"features: {volume_set.label}", unit="volume",
                                      disable=None if progress else True)):
        loaded: Dict[str, np.ndarray] = {}

        def volume() -> np.ndarray:
            if "v" not in loaded:
                loaded["v"] = item.load()
            return loaded["v"]

        for extractor in extractors:
            try:
                out.values[extractor.name].append(cache.get_or_compute(
                    extractor.key, item.key(), lambda e=extractor: e.function(volume(), item), extractor.shape))
            except InputError as exc:  # say which volume: a set can hold hundreds
                raise InputError(f"{volume_set.label} volume {item.name} ({item.source}): {exc}") from exc
        if index < PREVIEW_VOLUMES:
            out.previews.append(mip_panel(volume(), spacing, scale=1.0))
    return out
