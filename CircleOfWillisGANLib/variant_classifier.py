"""A small CPU-trainable classifier of Circle of Willis variants from TOF-MRA volumes.

Targets are the seven variants the named sliders move: each Pcom present, each fetal PCA (a Pcom with an
absent or hypoplastic P1), each A1 present and the Acom present. Labels come from TopCoW label maps (the
variant vectors) or from phantoms' recorded variants. Features are the volume average- and max-pooled to a
fixed 8 x 16 x 16 grid (so any model grid works and small shifts interpolate), reduced by PCA; each variant
gets an L2-regularised logistic regression on those components.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .files import atomic_write

NAMED_VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("pcom_left", "Left Pcom"), ("pcom_right", "Right Pcom"),
    ("fetal_pca_left", "Left fetal PCA"), ("fetal_pca_right", "Right fetal PCA"),
    ("a1_left", "Left A1"), ("a1_right", "Right A1"), ("acom", "Acom"),
)
VARIANT_KEYS = tuple(key for key, _ in NAMED_VARIANTS)
VARIANT_LABELS = dict(NAMED_VARIANTS)
FEATURE_GRID = (8, 16, 16)
METADATA_KEY = "cowgan_variant_classifier"
FORMAT = "cowgan-variant-classifier"


def targets_from_labels(labels: np.ndarray) -> Dict[str, int]:
    """The seven variant targets of a TopCoW label map (fetal PCA: Pcom present and P1 absent)."""
    from .topcow import variant_vectors

    named = variant_vectors(labels).named()
    return {"pcom_left": named["L-Pcom"], "pcom_right": named["R-Pcom"],
            "fetal_pca_left": int(named["L-Pcom"] and not named["L-P1"]),
            "fetal_pca_right": int(named["R-Pcom"] and not named["R-P1"]),
            "a1_left": named["L-A1"], "a1_right": named["R-A1"], "acom": named["Acom"]}


def targets_from_phantom(variants: Mapping[str, Any]) -> Dict[str, int]:
    """The seven variant targets from a phantom's recorded variants (its JSON "variants" object)."""
    return {"pcom_left": int(not variants["pcom_absent_left"]), "pcom_right": int(not variants["pcom_absent_right"]),
            "fetal_pca_left": int(variants["fetal_pca_left"]), "fetal_pca_right": int(variants["fetal_pca_right"]),
            "a1_left": int(not variants["a1_absent_left"]), "a1_right": int(not variants["a1_absent_right"]),
            "acom": int(not variants["acom_absent"])}


def volume_features(volumes: np.ndarray) -> np.ndarray:
    """(N, D, H, W) volumes -> (N, 2 x 8 x 16 x 16) average- and max-pooled intensities."""
    x = torch.as_tensor(np.asarray(volumes, np.float32))
    if x.ndim != 4:
        raise InputError(f"volumes must have shape (N, D, H, W), got {tuple(x.shape)}")
    x = x[:, None]
    pooled = [F.adaptive_avg_pool3d(x, FEATURE_GRID), F.adaptive_max_pool3d(x, FEATURE_GRID)]
    return torch.cat([p.flatten(1) for p in pooled], 1).numpy()


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 200) -> Tuple[np.ndarray, float]:
    """L2-regularised, class-balanced logistic regression of y (N,) in {0, 1} on x (N, F): (weights (F,), bias).

    Each class carries half of the total weight, so rare variants are not ignored."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    prior = float(yt.mean().clamp(1e-3, 1 - 1e-3))
    balance = torch.where(yt > 0.5, 0.5 / prior, 0.5 / (1 - prior))
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xt @ w + b, yt, weight=balance) + l2 * w.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().numpy(), float(b.detach())


@dataclasses.dataclass
class VariantClassifier:
    """PCA of pooled volume features, then one logistic regression per variant."""

    keys: Tuple[str, ...]
    mean: np.ndarray        # (F,)
    components: np.ndarray  # (K, F), rows scaled so that each component has unit variance on the training set
    weights: np.ndarray     # (V, K)
    bias: np.ndarray        # (V,)
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def probabilities(self, volumes: np.ndarray) -> np.ndarray:
        """(N, V) probability that each variant is present, for (N, D, H, W) volumes in [0, 1]."""
        z = (volume_features(volumes) - self.mean) @ self.components.T
        return 1.0 / (1.0 + np.exp(-(z @ self.weights.T + self.bias)))

    def predict(self, volumes: np.ndarray) -> np.ndarray:
        """(N, V) 0/1 calls at probability 0.5."""
        return (self.probabilities(volumes) >= 0.5).astype(np.int64)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the classifier as one safetensors file (no code, only arrays and JSON)."""
        from safetensors.numpy import save_file

        arrays = {name: np.ascontiguousarray(getattr(self, name), np.float64)
                  for name in ("mean", "components", "weights", "bias")}
        meta = json.dumps({"format": FORMAT, "keys": list(self.keys), "info": self.info}, default=str)
        return atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata={METADATA_KEY: meta}))


def load_classifier(path: Union[str, Path]) -> VariantClassifier:
    """Read a classifier written by `VariantClassifier.save`; InputError naming the fix otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"variant classifier {path} does not exist: train one with `cowgan name-directions --labelled DIR`")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read variant classifier {path} ({exc}): train it again") from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a variant classifier: pass a file written by `cowgan name-directions`")
    return VariantClassifier(tuple(meta["keys"]), arrays["mean"], arrays["components"], arrays["weights"],
                             arrays["bias"], meta.get("info", {}))


def balanced_accuracy(truth: np.ndarray, calls: np.ndarray) -> float:
    """Mean of sensitivity and specificity (the plain accuracy when only one class occurs)."""
    truth, calls = np.asarray(truth).astype(bool), np.asarray(calls).astype(bool)
    rates = [float((calls[truth == c] == c).mean()) for c in (True, False) if (truth == c).any()]
    return float(np.mean(rates)) if rates else float("nan")


def fit_classifier(volumes: np.ndarray, targets: Sequence[Mapping[str, int]], components: int = 96,
                   l2: float = 1.0) -> VariantClassifier:
    """Fit the classifier on labelled volumes (N, D, H, W) and their targets (one dict per volume)."""
    if len(volumes) != len(targets) or len(volumes) < 4:
        raise InputError(f"need at least 4 labelled volumes with one target set each, got {len(volumes)} volumes "
                         f"and {len(targets)} target sets: pass more labelled cases")
    y = np.array([[int(t[k]) for k in VARIANT_KEYS] for t in targets], np.float64)
    x = volume_features(volumes).astype(np.float64)
    mean = x.mean(0)
    _, s, vh = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(components, len(x) - 1, vh.shape[0]))
    scale = s[:k] / np.sqrt(max(1, len(x) - 1))
    comps = vh[:k] / np.maximum(scale, 1e-12)[:, None]
    z = (x - mean) @ comps.T
    fits = [fit_logistic(z, y[:, v], l2) for v in range(len(VARIANT_KEYS))]
    prevalence = {key: float(y[:, v].mean()) for v, key in enumerate(VARIANT_KEYS)}
    return VariantClassifier(VARIANT_KEYS, mean, comps, np.stack([w for w, _ in fits]), np.array([b for _, b in fits]),
                             {"cases": len(x), "components": k, "l2": l2, "prevalence": prevalence})


def evaluate_classifier(classifier: VariantClassifier, volumes: np.ndarray,
                        targets: Sequence[Mapping[str, int]]) -> Dict[str, float]:
    """Balanced accuracy per variant on labelled volumes (held out from fitting)."""
    calls = classifier.predict(volumes)
    return {key: balanced_accuracy([t[key] for t in targets], calls[:, v]) for v, key in enumerate(classifier.keys)}


def load_labelled_folder(folder: Union[str, Path]) -> Tuple[np.ndarray, List[Dict[str, int]], List[str]]:
    """Volumes and targets of a phantom folder (`cowgan phantoms`: *_image + JSON) or TopCoW-style pairs
    (*_image + *_label NIfTI); volumes are min-max scaled; returns (volumes, targets, case names)."""
    from .volume_io import load_volume

    folder = Path(folder)
    images = sorted(folder.glob("*_image.nii*"))
    if not images:
        raise InputError(f"no *_image.nii(.gz) files in {folder}: pass a folder written by `cowgan phantoms` or "
                         "TopCoW-style image/label pairs")
    volumes, targets, names = [], [], []
    for image in images:
        stem = image.name.split("_image")[0]
        sidecar = folder / f"{stem}.json"
        labels = sorted(folder.glob(f"{stem}_label.nii*"))
        if sidecar.is_file() and "variants" in json.loads(sidecar.read_text(encoding="utf-8")):
            targets.append(targets_from_phantom(json.loads(sidecar.read_text(encoding="utf-8"))["variants"]))
        elif labels:
            targets.append(targets_from_labels(load_volume(labels[0])[0]))
        else:
            raise InputError(f"{image.name} has neither a phantom JSON nor a label map beside it: add {stem}_label.nii.gz")
        volume = load_volume(image)[0]
        lo, hi = float(volume.min()), float(volume.max())
        volumes.append((volume - lo) / max(hi - lo, 1e-12))
        names.append(stem)
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1:
        raise InputError(f"labelled volumes have different shapes {sorted(shapes)}: prepare them on one grid")
    return np.stack(volumes).astype(np.float32), targets, names
