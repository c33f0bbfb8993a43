"""Real volumes for training: memory-mapped shards (or the whole set on the GPU) and a resumable data order.

The data order is a pure function of (seed, sample position): epoch e visits the volumes in the permutation
drawn from (seed, e), so a resumed run, or the same run on a different number of GPUs, sees the same volumes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from CircleOfWillisGANLib.errors import InputError

from .shards import open_shards, read_manifest

GPU_RESIDENT_FRACTION = 0.25
MIN_VOLUMES = 2  # the sample-sheet metric compares feature sets, which needs two volumes at least


class RealVolumes:
    """A prepared dataset as an indexable source of (n, 1, D, H, W) float32 batches on one device."""

    def __init__(self, shards: Sequence[np.ndarray], device: torch.device, manifest: Dict[str, Any]) -> None:
        self.manifest = manifest
        self.device = device
        self._shards = list(shards)
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        self.count = int(self._offsets[-1])
        if self.count < MIN_VOLUMES:
            raise InputError(f"the dataset holds {self.count} volume(s); training needs at least {MIN_VOLUMES} (and "
                             "hundreds to learn anatomy): prepare it again from a folder of more usable volumes")
        self.shape = tuple(int(s) for s in self._shards[0].shape[1:])
        self._resident = self._load_to_gpu() if device.type == "cuda" else None

    @classmethod
    def open(cls, root: Path, device: torch.device) -> "RealVolumes":
        """Open a dataset written by `cowgan prepare`."""
        manifest = read_manifest(root)
        shards, _ = open_shards(root, manifest)
        return cls(shards, device, manifest)

    @property
    def fingerprint(self) -> str:
        """A short hash of the manifest's shard list and volume sources, stored in resume states."""
        key = json.dumps([self.manifest.get("shards"), [v.get("sha256") for v in self.manifest.get("volumes", [])]],
                         sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def preparation(self) -> Dict[str, Any]:
        """How the volumes were brought onto the grid (shape, spacing, normalisation, template): a dataset prepared
        again from the same files with other settings has the same fingerprint but not the same preparation."""
        return {"shape_dhw": list(self.shape), "data": self.manifest.get("data", {}),
                "preparation": self.manifest.get("preparation", {})}

    def _load_to_gpu(self) -> Any:
        free, _ = torch.cuda.mem_get_info(self.device)
        size = self.count * int(np.prod(self.shape)) * 2
        if size > GPU_RESIDENT_FRACTION * free:
            return None
        return torch.cat([torch.from_numpy(np.ascontiguousarray(s)) for s in self._shards]).to(self.device)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Volumes at `indices` as a float32 (n, 1, D, H, W) tensor on the device."""
        if self._resident is not None:
            return self._resident[indices.to(self.device)].float().unsqueeze(1)
        idx = indices.cpu().numpy()
        shard = np.searchsorted(self._offsets, idx, side="right") - 1
        batch = np.stack([self._shards[s][i - self._offsets[s]] for s, i in zip(shard, idx)])
        tensor = torch.from_numpy(batch)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True).float().unsqueeze(1)


class DataOrder:
    """Which volume is shown at each sample position: a fresh permutation per epoch, seeded by (seed, epoch)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self.seed = seed
        self._cache: Dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache[epoch] = torch.randperm(self.count, generator=gen)
        return self._cache[epoch]

    def indices(self, start: int, n: int) -> torch.Tensor:
        """Volume indices for sample positions start .. start + n - 1."""
        out: List[torch.Tensor] = []
        position = start
        while position < start + n:
            epoch, offset = divmod(position, self.count)
            take = min(self.count - offset, start + n - position)
            out.append(self._permutation(epoch)[offset: offset + take])
            position += take
        return torch.cat(out)
