"""Writing one generated volume with everything a user needs beside it: NIfTI, JSON sidecar, MIP, surface."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from . import __version__
from .errors import OutputError
from .mip import mip_panel, save_png
from .files import write_json
from .volume_io import save_volume, spacing_of


def prepare_output_dir(path: Union[str, Path]) -> Path:
    """Create `path` if needed and check that it is writable, before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {exc.strerror or exc}; choose a writable location") from exc
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} is not writable: choose another --out")
    return path


def timestamp() -> str:
    """UTC time in ISO 8601, for sidecars and provenance."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_volume_outputs(out_dir: Union[str, Path], stem: str, volume: np.ndarray, affine: np.ndarray,
                         sidecar: Dict[str, Any], surface: bool = False, surface_format: str = ".vtp",
                         threshold: Optional[float] = None) -> Dict[str, Path]:
    """Write `stem`.nii.gz, `stem`.json, `stem`_mip.png and, with `surface`, `stem`_surface`format`.

    Each file is written to a temporary name and renamed, so an error never leaves a half-written file.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise OutputError(f"output folder {out} does not exist: create it first")
    paths = {"volume": save_volume(out / f"{stem}.nii.gz", volume, affine)}
    paths["mip"] = save_png(out / f"{stem}_mip.png", mip_panel(volume, spacing_of(affine)))
    record = dict(sidecar)
    record.setdefault("software_version", __version__)
    record.setdefault("created", timestamp())
    record["volume"] = {"file": paths["volume"].name, "shape_dhw": list(volume.shape),
                        "nifti_axes": "(H, W, D)", "affine": np.asarray(affine).tolist()}
    if surface:
        from .surface import save_surface, vessel_surface, vessel_threshold

        level = vessel_threshold(volume) if threshold is None else float(threshold)
        mesh = vessel_surface(volume, affine, level)
        paths["surface"] = save_surface(mesh, out / f"{stem}_surface{surface_format}")
        record["surface"] = {"file": paths["surface"].name, "threshold": level,
                             "threshold_method": "given" if threshold is not None else "Otsu on the brightest 10% of voxels",
                             "points": mesh.GetNumberOfPoints()}
    paths["sidecar"] = write_json(out / f"{stem}.json", record)
    return paths
