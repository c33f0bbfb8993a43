"""Where a session's volumes come from: a folder of NIfTI files, or a model and a list of seeds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..evaluation.volumes import nifti_files
from ..files import path_problem
from ..volume_io import load_volume
from .grid import DisplayGrid, check_displayable, grid_like

Loader = Callable[[], Tuple[np.ndarray, np.ndarray]]


@dataclass
class SourceItem:
    """One candidate volume: how to load it and, for the answer key only, where it came from."""

    provenance: Dict[str, Any]
    load: Loader


@dataclass
class VolumeSource:
    """The candidate volumes of one side of the test (real or generated), their native grid, and a digest of what
    they are (the voxels of a folder's files; a model's weights, seeds and psi) that the draw mixes in."""

    items: List[SourceItem]
    grid: DisplayGrid
    description: Dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def folder_source(folder: Union[str, Path], display: Optional[DisplayGrid] = None) -> VolumeSource:
    """Every NIfTI volume in `folder` (not recursive), skipping label maps by name as `cowgan evaluate` does; each is
    checked as it will be shown on `display` (default: the first volume's own grid, as for generated volumes)."""
    folder = Path(folder)
    paths = volume_files(folder)
    grid, digests = _check_candidates(folder, paths, display)
    items = [SourceItem({"path": str(p.resolve())}, _file_loader(p)) for p in paths]
    return VolumeSource(items, grid, {"kind": "folder", "folder": str(folder.resolve()), "n_available": len(items)},
                        hashlib.sha256("\n".join(digests).encode()).hexdigest())


def volume_files(folder: Union[str, Path]) -> List[Path]:
    """The NIfTI volumes `folder_source` would offer (label maps and masks skipped), refusing a missing or empty folder
    without reading any, so that a mistyped folder is named before minutes of reading the other side."""
    folder = Path(folder)
    problem = path_problem(folder, folder=True)
    if problem:
        raise InputError(f"volume folder {folder} {problem}: pass a folder of .nii or .nii.gz volumes")
    paths = nifti_files(folder)
    if not paths:
        raise InputError(f"no NIfTI volumes in {folder} (label maps and masks are skipped): "
                         "pass a folder holding .nii or .nii.gz images")
    return paths


def _check_candidates(folder: Path, paths: List[Path],
                      display: Optional[DisplayGrid]) -> Tuple[DisplayGrid, List[str]]:
    """Read every candidate before any is drawn, so that a bad (unreadable, not finite, constant, also where `display`
    shows it) or repeated file stops `create` whatever the seed; the first one's grid is the folder's. Returns it and
    each file's voxel digest."""
    seen: Dict[str, Path] = {}
    grid = None
    for path in paths:
        try:
            volume, affine = load_volume(path)
        except InputError as exc:
            raise InputError(f"{exc}; remove it from {folder} or replace it") from None
        if not volume.max() > volume.min():
            raise InputError(f"{path.name}: a case volume is constant: it has no vessels to show; remove it from "
                             f"{folder} or replace it")
        digest = voxel_digest(volume)
        if digest in seen:
            raise InputError(f"{seen[digest].name} and {path.name} in {folder} hold the same volume: remove one of "
                             "them so that no case is shown twice")
        seen[digest] = path
        grid = grid or grid_like(volume.shape, affine)
        try:
            check_displayable(volume, affine, display or grid)
        except InputError as exc:
            raise InputError(f"{path.name} in {folder}: {exc}") from None
    return grid, list(seen)


def voxel_digest(volume: np.ndarray) -> str:
    """A digest of a volume's shape and voxel values, whatever file format, name or header stores them."""
    digest = hashlib.sha256(repr(volume.shape).encode())
    digest.update(np.ascontiguousarray(volume, dtype=np.float32).tobytes())
    return digest.hexdigest()


def model_source(generator: Any, seeds: Sequence[int], psi: float = 1.0) -> VolumeSource:
    """Volumes a loaded CoWGenerator makes from `seeds`, generated only when a case needs them."""
    from ..checkpoint import weights_sha256

    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise InputError("the seed list repeats seeds: pass distinct seeds so that no generated case is shown twice")
    items = [SourceItem({"seed": s, "psi": float(psi)}, _seed_loader(generator, s, psi)) for s in seeds]
    description = {"kind": "model", "model": str(getattr(generator, "source", "")),
                   "model_name": generator.metadata.get("name"), "psi": float(psi), "n_available": len(items)}
    fingerprint = f"{weights_sha256(generator.checkpoint)}\n{seeds}\n{float(psi)!r}"
    return VolumeSource(items, grid_like(generator.arch.output_shape, generator.affine), description,
                        hashlib.sha256(fingerprint.encode()).hexdigest())


def _file_loader(path: Path) -> Loader:
    return lambda: load_volume(path)


def _seed_loader(generator: Any, seed: int, psi: float) -> Loader:
    return lambda: (generator.generate(seeds=[seed], psi=psi)[0], np.asarray(generator.affine))
