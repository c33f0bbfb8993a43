"""Bring any NIfTI volume onto a model's grid without SimpleITK: what the panel uses before projecting a scan.

The output grid has the model's shape and voxel spacing, RAS axes, and its centre at the centre of the input
volume, which is what `cowgan prepare --spacing` does for volumes whose axes are already the RAS axes; values
are trilinear, the background outside the input is the input's minimum, and the result is min-max scaled.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .volume_io import default_affine


def centred_model_affine(input_affine: np.ndarray, input_shape_dhw: Sequence[int], shape_dhw: Sequence[int],
                         spacing_mm: Sequence[float]) -> np.ndarray:
    """The RAS affine of a model grid of `shape_dhw` at `spacing_mm` centred on the input volume's centre."""
    d, h, w = input_shape_dhw
    centre = np.asarray(input_affine, float) @ np.array([(h - 1) / 2.0, (w - 1) / 2.0, (d - 1) / 2.0, 1.0])
    affine = default_affine(shape_dhw, spacing_mm)
    affine[:3, 3] += centre[:3]
    return affine


def resample_to_model_grid(volume_dhw: np.ndarray, affine: np.ndarray, shape_dhw: Sequence[int],
                           spacing_mm: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(D, H, W) volume in [0, 1] on the model grid centred on the input, and that grid's RAS affine."""
    volume = np.asarray(volume_dhw, np.float32)
    if volume.ndim != 3 or not np.isfinite(volume).all():
        raise InputError(f"the scan must be one finite 3D volume, got shape {volume.shape}: pass a single TOF-MRA volume")
    if float(volume.max()) <= float(volume.min()):
        raise InputError("the scan is constant: pass a TOF-MRA volume with vessel contrast")
    out_affine = centred_model_affine(affine, volume.shape, shape_dhw, spacing_mm)
    d, h, w = (int(s) for s in shape_dhw)
    ijk = np.stack(np.meshgrid(np.arange(h), np.arange(w), np.arange(d), indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ out_affine[:3, :3].T + out_affine[:3, 3]
    source = (world - np.asarray(affine, float)[:3, 3]) @ np.linalg.inv(np.asarray(affine, float)[:3, :3]).T
    sd, sh, sw = volume.shape
    # grid_sample wants (x, y, z) = (W, H, D) of the input tensor (1, 1, D, H, W), in [-1, 1] over voxel centres
    norm = np.stack([source[:, 1] / max(sw - 1, 1), source[:, 0] / max(sh - 1, 1), source[:, 2] / max(sd - 1, 1)], -1) * 2 - 1
    grid = torch.from_numpy(norm.reshape(h, w, d, 3).transpose(2, 0, 1, 3).copy()).float()[None]
    background = float(volume.min())
    inp = torch.from_numpy(volume - background)[None, None]
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0].numpy()
    out = out + background
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        raise InputError("the scan does not overlap the model's field of view: check that it is a head TOF-MRA volume")
    return ((out - lo) / (hi - lo)).astype(np.float32), out_affine
