"""Latent directions for the explorer's sliders: closed-form SeFa directions of the style affines and PCA of W.

SeFa (Shen & Zhou, 2021) finds the directions in W that the style affines of a group of synthesis blocks
stretch most: the top eigenvectors of A^T A, where A stacks those affines' weight matrices. Moving w along
one of them, in those blocks only, changes what those blocks control (coarse: overall shape; fine: texture).
PCA of W finds the directions along which the mapping network's outputs vary most, applied to every block.
Both are computed once per model (well under a second) and cached in the checkpoint's `directions`
tensors and `metadata["directions"]`, so a saved checkpoint carries them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, List, Sequence, Tuple

import torch

from .checks import finite_number
from .errors import InputError

CACHE_VERSION = 1
METADATA_KEY = "directions"
GROUPS = ("coarse", "middle", "fine")
PCA_KEY = "pca_w"
DEFAULT_PER_GROUP = 2
DEFAULT_PCA = 2
PCA_SAMPLES = 4000
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Direction:
    """One slider: a unit vector in W, the blocks it is added to, and the spread of w along it."""

    label: str
    vector: torch.Tensor
    layers: Tuple[int, ...]
    sigma: float
    method: str


def layer_groups(num_ws: int) -> Dict[str, Tuple[int, ...]]:
    """Split the blocks into coarse, middle and fine thirds (6 blocks: 0-1, 2-3, 4-5)."""
    if num_ws < 1:
        raise InputError(f"a model needs at least one style block, got {num_ws}")
    bounds = [round(num_ws * k / 3) for k in range(4)]
    groups = {name: tuple(range(bounds[k], bounds[k + 1])) for k, name in enumerate(GROUPS)}
    return {name: layers for name, layers in groups.items() if layers}


def sefa(affine_weights: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """The top-k unit eigenvectors (k, latent) of A^T A, A = the stacked affines, each scaled to unit norm."""
    a = torch.cat([w.detach().double() / w.detach().double().norm().clamp_min(1e-12) for w in affine_weights])
    eigenvalues, eigenvectors = torch.linalg.eigh(a.T @ a)
    top = eigenvectors[:, torch.argsort(eigenvalues, descending=True)[:k]].T
    return _fix_signs(top).float()


def pca(samples: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The top-k principal axes (k, latent) of `samples` (N, latent) and the standard deviation along each."""
    centred = samples.double() - samples.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    sigma = s[:k] / max(1, samples.shape[0] - 1) ** 0.5
    return _fix_signs(vh[:k]).float(), sigma.float()


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Eigenvectors are defined up to sign: make each one's largest component positive, so they are stable."""
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors[torch.arange(vectors.shape[0]), idx])
    return vectors * signs[:, None]


def _block_affines(generator: Any, block: int) -> List[torch.Tensor]:
    b = generator.model.synthesis.blocks[block]
    return [b.conv1.affine.weight, b.conv2.affine.weight, b.to_image.affine.weight]


@torch.no_grad()
def compute_directions(generator: Any, per_group: int = DEFAULT_PER_GROUP, num_pca: int = DEFAULT_PCA,
                       samples: int = PCA_SAMPLES, seed: int = 0) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """SeFa directions per layer group and PCA directions of W: (tensors by key, metadata describing them)."""
    latent = generator.arch.latent_dim
    z = torch.from_numpy(_normal(samples, latent, seed))
    w = torch.cat([generator.mapping(chunk, exact=False) for chunk in z.split(1000)])
    tensors: Dict[str, torch.Tensor] = {}
    entries: List[Dict[str, Any]] = []
    number = 1
    for group, layers in layer_groups(generator.num_ws).items():
        k = min(per_group, latent)
        vectors = sefa([wt for b in layers for wt in _block_affines(generator, b)], k)
        sigmas = (w.double() @ vectors.double().T).std(0).float()
        tensors[f"sefa_{group}"] = vectors
        for i in range(k):
            entries.append({"key": f"sefa_{group}", "row": i, "label": f"Direction {number} ({group})",
                            "layers": list(layers), "sigma": float(sigmas[i]), "method": "sefa"})
            number += 1
    if num_pca > 0:
        vectors, sigmas = pca(w, min(num_pca, latent))
        tensors[PCA_KEY] = vectors
        for i in range(vectors.shape[0]):
            entries.append({"key": PCA_KEY, "row": i, "label": f"Direction {number} (PCA of W, all layers)",
                            "layers": list(range(generator.num_ws)), "sigma": float(sigmas[i]), "method": "pca"})
            number += 1
    return tensors, {"version": CACHE_VERSION, "samples": samples, "seed": seed, "entries": entries}


def _normal(n: int, dim: int, seed: int):
    import numpy as np

    return np.random.Generator(np.random.PCG64(seed)).standard_normal((n, dim)).astype(np.float32)


def cached_directions(checkpoint: Any) -> List[Direction]:
    """The directions a checkpoint already carries, or [] when it has none, an older cache, or one that does not fit
    the model (a bad entry is logged; directions_for then computes them anew, so the model stays usable)."""
    info = checkpoint.metadata.get(METADATA_KEY)
    if not isinstance(info, dict) or info.get("version") != CACHE_VERSION:
        return []
    entries = info.get("entries", [])
    if not isinstance(entries, list):
        entries = [entries]
    out = []
    for number, e in enumerate(entries, 1):
        problem = _entry_problem(e, checkpoint.directions, checkpoint.architecture.num_blocks)
        if problem:
            log.warning("the model's cached latent direction %d is unusable (%s): computing its directions anew",
                        number, problem)
            return []
        out.append(Direction(e["label"], checkpoint.directions[e["key"]][e["row"]].float(), tuple(e["layers"]),
                             float(e["sigma"]), e["method"]))
    return out


def _entry_problem(entry: Any, tensors: Dict[str, torch.Tensor], num_ws: int) -> str:
    """What makes one cached direction entry unusable ('' when it is usable): a missing vector, blocks outside
    0..num_ws-1 (an IndexError when applied) or a spread that is not a finite positive number (NaN w)."""
    if not isinstance(entry, dict):
        return f"an entry is {type(entry).__name__}, not a mapping"
    tensor = tensors.get(entry.get("key"))
    row = entry.get("row")
    if tensor is None or not _whole(row) or not 0 <= row < tensor.shape[0]:
        return f"no vector {entry.get('key')!r} row {row!r}"
    layers = entry.get("layers")
    if not isinstance(layers, (list, tuple)) or not layers or not all(_whole(b) and 0 <= b < num_ws for b in layers):
        return f"blocks {layers!r} are not within 0 to {num_ws - 1}"
    sigma = entry.get("sigma")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        return f"its spread sigma {sigma!r} is not a finite positive number"
    if not isinstance(entry.get("label"), str) or not isinstance(entry.get("method"), str):
        return "its label or method is not text"
    return ""


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def directions_for(generator: Any) -> List[Direction]:
    """The model's directions: read from its checkpoint, or computed now and cached there (once per model)."""
    found = cached_directions(generator.checkpoint)
    if found:
        return found
    tensors, info = compute_directions(generator)
    generator.checkpoint.directions.update(tensors)
    generator.checkpoint.metadata[METADATA_KEY] = info
    return cached_directions(generator.checkpoint)


def apply_directions(ws: torch.Tensor, directions: Sequence[Direction], amounts: Sequence[float]) -> torch.Tensor:
    """Add amount x sigma x direction to the blocks of each direction; `amounts` are in standard deviations."""
    if isinstance(amounts, (str, bytes)) or not hasattr(amounts, "__len__"):
        raise InputError(f"direction amounts must be a list with one number per direction, got {amounts!r}")
    if len(amounts) > len(directions):
        raise InputError(f"got {len(amounts)} direction amounts for {len(directions)} directions")
    amounts = [finite_number(a, f"the amount of direction {i + 1}") for i, a in enumerate(amounts)]
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3:
        raise InputError(f"ws must be a (N, num_ws, latent) tensor, as generator.styles() gives, got "
                         f"{tuple(getattr(ws, 'shape', ())) or type(ws).__name__}")
    ws = ws.clone()
    for direction, amount in zip(directions, amounts):
        if amount:
            step = (float(amount) * direction.sigma) * direction.vector.to(ws.dtype)
            ws[:, list(direction.layers)] += step
    return ws
