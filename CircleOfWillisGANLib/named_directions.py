"""Anatomically named latent directions: linear boundaries in W between samples with and without a variant.

Generated samples are labelled by a variant classifier; a class-balanced logistic regression in W (centred, one
scale for all dimensions) gives each variant's boundary, whose normal is the direction that adds the variant. Each normal
is then made orthogonal to the other variants' normals, so that moving along it changes the other variants'
scores as little as a linear model can (conditional manipulation). The directions are stored beside the SeFa
and PCA ones (key "named", method "named"), so the panel shows them as sliders named "Left Pcom", ...
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .directions import METADATA_KEY, Direction, apply_directions, cached_directions, directions_for
from .errors import InputError
from .variant_classifier import VARIANT_LABELS, VariantClassifier, balanced_accuracy

NAMED_KEY = "named"
METHOD = "named"
MIN_PER_CLASS = 5  # samples of each class needed to fit a boundary
MIN_INDEPENDENCE = 0.1  # part of a boundary normal outside the other normals' span needed to name a direction of its own
SPAN_TOLERANCE = 1e-9  # singular values below this fraction of the largest add no direction to a span
BOUNDARY_HELD_OUT = 5  # every 5th sample is kept out of the boundary's fit to measure it
MIN_BOUNDARY_ACCURACY = 0.6  # held-out balanced accuracy below which a boundary does not predict the calls
MIN_CLASSIFIER_ACCURACY = 0.75  # held-out balanced accuracy below which the classifier's calls of a variant are noise
Progress = Callable[[int, int], None]


@dataclasses.dataclass
class BoundaryFit:
    """Boundaries fitted in W: a unit normal, its spread and its fit quality per variant."""

    keys: List[str]
    normals: torch.Tensor  # (V, latent) unit vectors, orthogonalised against each other
    sigmas: List[float]  # standard deviation of the samples' w along each normal
    accuracy: Dict[str, Optional[float]]  # balanced accuracy of each boundary on held-out samples' calls (None: unmeasured)
    prevalence: Dict[str, float]  # share of samples the classifier calls present
    skipped: Dict[str, str]  # variants without a boundary, and why


def orthogonalise(normals: torch.Tensor) -> torch.Tensor:
    """Each row minus its projection onto the span of the other rows, renormalised."""
    residuals = _residuals(normals)
    return (residuals / residuals.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()


def _residuals(normals: torch.Tensor) -> torch.Tensor:
    """Each unit row minus its projection onto the span of the other rows (float64): its norm is how much of the
    row no combination of the others can give. The span comes from an SVD, which drops the others' dependent rows
    (two variants with the same calls give the same row), where a QR would add arbitrary directions to it."""
    out = []
    for i in range(normals.shape[0]):
        others = torch.cat([normals[:i], normals[i + 1:]]).double()
        v = normals[i].double()
        if others.shape[0]:
            u, singular, _ = torch.linalg.svd(others.T, full_matrices=False)
            span = u[:, singular > singular.max() * SPAN_TOLERANCE]
            v = v - span @ (span.T @ v)
        out.append(v)
    return torch.stack(out)


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


def fit_boundaries(w: torch.Tensor, calls: np.ndarray, keys: Sequence[str], l2: float = 1.0,
                   classifier_accuracy: Optional[Dict[str, float]] = None) -> BoundaryFit:
    """Fit one boundary per variant between w (N, latent) called present (1) and absent (0) in `calls` (N, V).

    Variants whose held-out `classifier_accuracy` is below MIN_CLASSIFIER_ACCURACY get no boundary: one fitted to
    calls near chance would name a direction that does not move the variant.

    W is centred and divided by one scale for all dimensions, not per dimension, so the L2 penalty keeps the
    boundary off dimensions along which W hardly varies: those can separate the fitted calls, but moving along
    them barely changes the volume. On the 19-kimg demo model (100 unseen seeds, 3 SD), the variants it makes in
    more than 5% and less than 95% of samples flipped in 44-95% of them this way, 1-27% with per-dimension scaling.
    """
    w = torch.as_tensor(w)
    calls = np.asarray(calls)
    if w.ndim != 2 or calls.ndim != 2 or len(w) != len(calls) or calls.shape[1] < len(keys):
        raise InputError(f"w {tuple(w.shape)} and calls {calls.shape} must be (N, latent) and (N, {len(keys)} or more) "
                         f"for the {len(keys)} variant keys (column k is keys[k]): pass sample_calls' output")
    if not torch.isfinite(w).all():
        raise InputError("w contains NaN or infinite values: pass w made by the model's mapping")
    w64 = w.double().numpy()
    centred = w64 - w64.mean(0)
    x = centred / (centred.std() + 1e-12)
    normals, fitted, accuracy, skipped, problems = [], [], {}, {}, {}
    for v, key in enumerate(keys):
        accuracy_of_calls = (classifier_accuracy or {}).get(key, 1.0)
        y = np.asarray(calls)[:, v].astype(np.float64)
        counts = int(y.sum()), int(len(y) - y.sum())
        if accuracy_of_calls is None:
            problems[key] = ("the classifier's held-out cases show it present, or absent, too rarely to measure how "
                             "well it is called")
            skipped[key] = f"{problems[key]} (unmeasured): label more cases with and without it"
            continue
        if not _reliable(accuracy_of_calls):
            problems[key] = f"the classifier calls it with a held-out balanced accuracy of {accuracy_of_calls:.2f}"
            skipped[key] = (f"{problems[key]} (need {MIN_CLASSIFIER_ACCURACY}): label more cases, train it longer or "
                            "use a finer model grid")
            continue
        if min(counts) < MIN_PER_CLASS:
            problems[key] = f"only {counts[0]} samples with and {counts[1]} without it"
            skipped[key] = (f"{problems[key]} (need {MIN_PER_CLASS} of each): use more samples or a model that makes "
                            "this variant")
            continue
        accuracy[key] = _held_out_accuracy(x, y, l2)
        if accuracy[key] < MIN_BOUNDARY_ACCURACY:
            problems[key] = (f"its boundary in W calls unseen samples with a balanced accuracy of {accuracy.pop(key):.2f}"
                             f" (need {MIN_BOUNDARY_ACCURACY})")
            skipped[key] = f"{problems[key]}: use more samples (--samples), several times the latent size"
            continue
        weights, _ = fit_logistic(x, y, l2)
        normal = torch.from_numpy(weights)  # the score's gradient in W (one scale for all dimensions)
        normals.append(normal / normal.norm())
        fitted.append(key)
    while len(fitted) > 1:  # a boundary along the others' cannot move its variant alone: the one least apart goes
        apart = _residuals(torch.stack(normals)).norm(dim=1)
        worst = int(apart.argmin())
        if apart[worst] >= MIN_INDEPENDENCE:
            break
        key = fitted.pop(worst)
        normals.pop(worst)
        accuracy.pop(key)
        problems[key] = f"its boundary lies along the other variants' ({float(apart[worst]):.2f} of it is its own)"
        skipped[key] = f"{problems[key]}: these samples do not tell it apart from them; use more samples or labels"
    if not fitted:
        raise InputError("no variant can be named: " + "; ".join(f"{k}: {why}" for k, why in problems.items())
                         + ". Label more cases, train the classifier longer or generate more samples (--samples)")
    ortho = orthogonalise(torch.stack(normals))
    sigmas = [float((w.double() @ n.double()).std()) for n in ortho]
    prevalence = {key: float(np.asarray(calls)[:, v].mean()) for v, key in enumerate(keys)}
    return BoundaryFit(fitted, ortho, sigmas, accuracy, prevalence, skipped)


def _held_out_accuracy(x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Balanced accuracy of a boundary fitted without every BOUNDARY_HELD_OUT-th sample of each class, on those
    samples: with fewer samples than dimensions of W a boundary separates its own samples perfectly whatever the
    calls, so only unseen ones say whether it predicts them (both classes are held out, so a rare variant is
    measured too; each has MIN_PER_CLASS samples at least)."""
    held = np.zeros(len(y), bool)
    for c in (0.0, 1.0):
        held[np.flatnonzero(y == c)[::BOUNDARY_HELD_OUT]] = True
    weights, bias = fit_logistic(x[~held], y[~held], l2)
    return float(balanced_accuracy(y[held], (x[held] @ weights + bias) >= 0))


def sample_calls(generator: Any, classifier: VariantClassifier, samples: int, seed: int = 0, psi: float = 1.0,
                 progress: Optional[Progress] = None, batch: int = 8) -> Tuple[torch.Tensor, np.ndarray]:
    """w (N, latent) of `samples` seeds from `seed` on, as the mapping makes it, and the classifier's calls (N, V) on
    their volumes, made at truncation `psi`: truncation moves w towards w_avg along straight lines, so boundaries
    fitted in untruncated W are the same, and a direction's SD stays in the unit of every other slider."""
    seeds = list(range(seed, seed + samples))
    ws, calls = [], []
    for start in range(0, samples, batch):
        chunk = seeds[start:start + batch]
        w = generator.mapping(generator.z_from_seeds(chunk), exact=False)
        volumes = generator.generate(w=w, psi=psi, noise_seed=chunk)
        ws.append(w)
        calls.append(classifier.predict(volumes))
        if progress:
            progress(min(start + batch, samples), samples)
    return torch.cat(ws), np.concatenate(calls)


def store_named_directions(generator: Any, fit: BoundaryFit, info: Dict[str, Any]) -> List[Direction]:
    """Add the named directions to the model's direction cache (after its SeFa/PCA ones); return all directions."""
    directions_for(generator)
    ckpt = generator.checkpoint
    cache = dict(ckpt.metadata[METADATA_KEY])
    entries = [e for e in cache["entries"] if e.get("key") != NAMED_KEY]
    layers = list(range(generator.num_ws))
    for row, (key, sigma) in enumerate(zip(fit.keys, fit.sigmas)):
        entries.append({"key": NAMED_KEY, "row": row, "label": VARIANT_LABELS.get(key, key), "layers": layers,
                        "sigma": sigma, "method": METHOD, "variant": key, "boundary_accuracy": fit.accuracy[key]})
    cache["entries"] = entries
    cache[NAMED_KEY] = info
    ckpt.directions[NAMED_KEY] = fit.normals.clone()
    ckpt.metadata[METADATA_KEY] = cache
    return cached_directions(ckpt)


def named(directions: Sequence[Direction]) -> List[Direction]:
    """Only the named directions, in stored order."""
    return [d for d in directions if d.method == METHOD]


@dataclasses.dataclass
class EditReport:
    """What moving one named direction did to the classifier's calls over a set of samples."""

    label: str
    samples: int
    flipped: float  # share of samples whose named variant changed
    others_kept: Optional[float]  # share of unchanged calls of the other reliably called variants (None: there are none)
    kept_by_variant: Dict[str, float]  # share of samples whose call of each other variant did not change
    at_chance: List[str] = dataclasses.field(default_factory=list)  # variants the classifier cannot call: not in others_kept


def measure_edits(generator: Any, classifier: VariantClassifier, directions: Sequence[Direction], samples: int = 100,
                  amount: float = 3.0, seed: int = 10_000, progress: Optional[Progress] = None) -> List[EditReport]:
    """measure_edits_around the `samples` seeds from `seed` on (w from the mapping, noise from the seed); each seed's
    exact w, so the report is the one measure_edits_around gives for the w its volume's sidecar records."""
    seeds = list(range(seed, seed + samples))
    ws = generator.broadcast_w(generator.mapping(generator.z_from_seeds(seeds)))
    return measure_edits_around(generator, classifier, directions, ws, generator.noise(seeds), amount, progress)


def measure_edits_around(generator: Any, classifier: VariantClassifier, directions: Sequence[Direction],
                         ws: torch.Tensor, noise: torch.Tensor, amount: float = 3.0,
                         progress: Optional[Progress] = None) -> List[EditReport]:
    """Move each named direction by `amount` standard deviations towards the opposite call from each of the volumes
    that w+ `ws` (N, num_ws, latent) and `noise` (N, ...) make, seeds' or projections', and count flips.

    "Others kept" pools the other variants the classifier calls reliably (held-out balanced accuracy of at least
    MIN_CLASSIFIER_ACCURACY): a change in a call at chance level is not a change in the anatomy."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < amount < math.inf:
        raise InputError(f"the move must be a positive number of standard deviations (e.g. 3), got {amount!r}: each "
                         "sample is moved towards the opposite of its call")
    keys = list(classifier.keys)
    accuracy = classifier.info.get("held_out_balanced_accuracy") or {}
    reliable = [k for k in range(len(keys)) if _reliable(accuracy.get(keys[k], 1.0))]
    chosen = named(directions)
    ws = generator.broadcast_w(ws)
    samples = ws.shape[0]
    before = classifier.predict(generator.generate(w=ws, noise=noise))
    reports = []
    for i, direction in enumerate(chosen):
        v = keys.index(_variant_of(direction))
        signs = np.where(before[:, v] == 1, -amount, amount)
        edited = torch.cat([apply_directions(ws[j:j + 1], [direction], [float(signs[j])]) for j in range(samples)])
        after = classifier.predict(generator.generate(w=edited, noise=noise))
        kept = (after == before).mean(0)
        others = [k for k in reliable if k != v]
        reports.append(EditReport(direction.label, samples, float(1.0 - kept[v]),
                                  float(kept[others].mean()) if others else None,
                                  {keys[k]: float(kept[k]) for k in range(len(keys)) if k != v},
                                  [keys[k] for k in range(len(keys)) if k != v and k not in reliable]))
        if progress:
            progress(i + 1, len(chosen))
    return reports


def _reliable(held_out_accuracy: Optional[float]) -> bool:
    """Whether calls of a variant with this held-out balanced accuracy (None: unmeasured) mean anything."""
    return held_out_accuracy is not None and held_out_accuracy >= MIN_CLASSIFIER_ACCURACY


def _variant_of(direction: Direction) -> str:
    for key, label in VARIANT_LABELS.items():
        if label == direction.label:
            return key
    raise InputError(f"direction {direction.label!r} names no known variant: fit the named directions again")
