"""3D multi-scale structural similarity (MS-SSIM) between volumes, and the mean over pairs as a diversity
score: high mean MS-SSIM among generated volumes means they look alike (mode collapse)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

SCALE_WEIGHTS_5 = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class MSSSIMConfig:
    """3 scales with a 7-voxel Gaussian (sigma 1.5): the most a depth of 32 allows (32 -> 16 -> 8 >= 7)."""

    scales: int = 3
    kernel_size: int = 7
    sigma: float = 1.5
    data_range: float = 1.0
    k1: float = 0.01
    k2: float = 0.03

    def weights(self) -> Tuple[float, ...]:
        """The first `scales` of Wang et al.'s five scale weights, renormalised to sum to 1."""
        w = SCALE_WEIGHTS_5[: self.scales]
        return tuple(v / sum(w) for v in w)

    def min_size(self) -> int:
        """Smallest edge (voxels) a volume may have for every scale to fit the kernel."""
        return self.kernel_size * 2 ** (self.scales - 1)

    def fitted_to(self, shape: Sequence[int]) -> "MSSSIMConfig":
        """This configuration with as many of its scales as volumes of `shape` hold (at least one), so that thin
        volumes (a depth of 16 holds 2 scales) are still compared instead of skipped."""
        scales = self.scales
        while scales > 1 and min(shape) < self.kernel_size * 2 ** (scales - 1):
            scales -= 1
        return replace(self, scales=scales)


def _kernel(cfg: MSSSIMConfig) -> torch.Tensor:
    x = torch.arange(cfg.kernel_size, dtype=torch.float64) - (cfg.kernel_size - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2 * cfg.sigma ** 2))
    return (g / g.sum()).float()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, D, H, W) without padding ('valid')."""
    k = g.numel()
    x = F.conv3d(x, g.view(1, 1, k, 1, 1))
    x = F.conv3d(x, g.view(1, 1, 1, k, 1))
    return F.conv3d(x, g.view(1, 1, 1, 1, k))


@dataclass
class _Pyramid:
    """Per-volume local statistics at every scale, so that each pair only needs its cross term."""

    levels: List[torch.Tensor]
    means: List[torch.Tensor]
    second_moments: List[torch.Tensor]


def _pyramid(volume: np.ndarray, cfg: MSSSIMConfig, g: torch.Tensor) -> _Pyramid:
    x = torch.as_tensor(np.asarray(volume, dtype=np.float32))[None, None]
    levels, means, seconds = [], [], []
    for scale in range(cfg.scales):
        if scale:
            x = F.avg_pool3d(x, 2)
        levels.append(x)
        means.append(_blur(x, g))
        seconds.append(_blur(x * x, g))
    return _Pyramid(levels, means, seconds)


def _pair(a: _Pyramid, b: _Pyramid, cfg: MSSSIMConfig, g: torch.Tensor) -> float:
    c1 = (cfg.k1 * cfg.data_range) ** 2
    c2 = (cfg.k2 * cfg.data_range) ** 2
    weights = cfg.weights()
    value = 1.0
    for scale in range(cfg.scales):
        mu_a, mu_b = a.means[scale], b.means[scale]
        var_a = a.second_moments[scale] - mu_a ** 2
        var_b = b.second_moments[scale] - mu_b ** 2
        cov = _blur(a.levels[scale] * b.levels[scale], g) - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        if scale == cfg.scales - 1:
            term = ((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs).mean()
        else:
            term = cs.mean()
        value *= float(torch.relu(term)) ** weights[scale]
    return value


def _check_shapes(volumes: Sequence[np.ndarray], cfg: MSSSIMConfig) -> None:
    shapes = {tuple(np.shape(v)) for v in volumes}
    if len(shapes) != 1:
        raise InputError(f"MS-SSIM needs volumes on one grid, got shapes {sorted(shapes)}: resample them first")
    shape = shapes.pop()
    if len(shape) != 3:
        raise InputError(f"MS-SSIM needs 3D (D, H, W) volumes, got shape {shape}")
    if min(shape) >= cfg.min_size():
        return
    if cfg.scales == 1:  # nothing left to drop: only larger volumes can be compared
        raise InputError(f"diversity (MS-SSIM) needs at least {cfg.kernel_size} voxels along every axis (its Gaussian "
                         f"window); these volumes are {'x'.join(map(str, shape))}: evaluate volumes prepared on a grid "
                         f"of at least {cfg.kernel_size} voxels per axis (`cowgan prepare --shape D H W`)")
    raise InputError(f"MS-SSIM with {cfg.scales} scales and kernel {cfg.kernel_size} needs 3D volumes of at least "
                     f"{cfg.min_size()} voxels per edge, got {shape}: use fewer scales (MSSSIMConfig.fitted_to(shape) "
                     "keeps as many as fit) or larger volumes")


def ms_ssim(a: np.ndarray, b: np.ndarray, config: MSSSIMConfig = MSSSIMConfig()) -> float:
    """MS-SSIM of two (D, H, W) volumes with values in [0, data_range]; 1 for identical volumes."""
    _check_shapes([a, b], config)
    g = _kernel(config)
    with torch.no_grad():
        return _pair(_pyramid(a, config, g), _pyramid(b, config, g), config, g)


def pairwise_ms_ssim(volumes: Sequence[np.ndarray], config: MSSSIMConfig = MSSSIMConfig(),
                     progress: bool = False) -> np.ndarray:
    """MS-SSIM of every unordered pair of volumes (i < j), in combinations() order."""
    if len(volumes) < 2:
        raise InputError(f"diversity needs at least 2 volumes, got {len(volumes)}")
    _check_shapes(volumes, config)
    from tqdm import tqdm

    g = _kernel(config)
    with torch.no_grad():
        pyramids = [_pyramid(v, config, g) for v in volumes]
        pairs = list(combinations(range(len(volumes)), 2))
        return np.array([_pair(pyramids[i], pyramids[j], config, g)
                         for i, j in tqdm(pairs, desc="MS-SSIM pairs", unit="pair", disable=not progress or None)])
