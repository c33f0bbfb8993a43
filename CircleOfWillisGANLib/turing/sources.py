"""Where a session's volumes come from: a folder of NIfTI files, or a model and a list of seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..evaluation.volumes import nifti_files
from ..files import path_problem
from ..volume_io import load_volume, volume_grid
from .grid import DisplayGrid, grid_like

Loader = Callable[[], Tuple[np.ndarray, np.ndarray]]


@dataclass
class SourceItem:
    """One candidate volume: how to load it and, for the answer key only, where it came from."""

    provenance: Dict[str, Any]
    load: Loader


@dataclass
class VolumeSource:
    """The candidate volumes of one side of the test (real or generated) and their native grid."""

    items: List[SourceItem]
    grid: DisplayGrid
    description: Dict[str, Any] = field(default_factory=dict)


def folder_source(folder: Union[str, Path]) -> VolumeSource:
    """Every NIfTI volume in `folder` (not recursive), skipping label maps by name as `cowgan evaluate` does."""
    folder = Path(folder)
    problem = path_problem(folder, folder=True)
    if problem:
        raise InputError(f"volume folder {folder} {problem}: pass a folder of .nii or .nii.gz volumes")
    paths = nifti_files(folder)
    if not paths:
        raise InputError(f"no NIfTI volumes in {folder} (label maps and masks are skipped): "
                         "pass a folder holding .nii or .nii.gz images")
    grids = []
    for path in paths:  # every candidate, before any is drawn: a bad file must not depend on the seed
        try:
            grids.append(volume_grid(path))
        except InputError as exc:
            raise InputError(f"{exc}; remove it from {folder} or replace it") from None
    shape, affine = grids[0]
    items = [SourceItem({"path": str(p.resolve())}, _file_loader(p)) for p in paths]
    return VolumeSource(items, grid_like(shape, affine),
                        {"kind": "folder", "folder": str(folder.resolve()), "n_available": len(items)})


def model_source(generator: Any, seeds: Sequence[int], psi: float = 1.0) -> VolumeSource:
    """Volumes a loaded CoWGenerator makes from `seeds`, generated only when a case needs them."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise InputError("the seed list repeats seeds: pass distinct seeds so that no generated case is shown twice")
    items = [SourceItem({"seed": s, "psi": float(psi)}, _seed_loader(generator, s, psi)) for s in seeds]
    description = {"kind": "model", "model": str(getattr(generator, "source", "")),
                   "model_name": generator.metadata.get("name"), "psi": float(psi), "n_available": len(items)}
    return VolumeSource(items, grid_like(generator.arch.output_shape, generator.affine), description)


def _file_loader(path: Path) -> Loader:
    return lambda: load_volume(path)


def _seed_loader(generator: Any, seed: int, psi: float) -> Loader:
    return lambda: (generator.generate(seeds=[seed], psi=psi)[0], np.asarray(generator.affine))
