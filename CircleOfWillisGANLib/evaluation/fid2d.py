"""The paper's 2D FID: every axial slice of every volume through pytorch-fid's InceptionV3 (pool3, 2048
features), each slice min-max scaled to 8-bit grey as the paper's PNG export did, then the Fréchet distance.

Optional: it needs the `pytorch-fid` package and its weights file already on disk; nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import InputError

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
POOL3_FEATURES = 2048  # InceptionV3's pool3 channels: features per axial slice
ENABLE_HINT = (f"to enable it, `pip install pytorch-fid` and put {INCEPTION_FILENAME} (from the pytorch-fid "
               "GitHub release) in {hub_dir} or pass --inception-weights PATH")


@dataclass(frozen=True)
class FID2DStatus:
    """Whether the 2D FID can run, and if not, the message that says why and how to enable it."""

    available: bool
    message: str
    weights: Optional[Path] = None


def default_weights_path() -> Path:
    """Where pytorch-fid looks for its weights: torch hub's checkpoint folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def fid2d_status(weights: Optional[Union[str, Path]] = None) -> FID2DStatus:
    """Check for pytorch-fid and the InceptionV3 weights file without importing anything heavy or downloading.

    Without it the 2D FID is skipped with a note, unless `weights` were given: asking for it explicitly and not
    getting it is an InputError.
    """
    import importlib.util

    hint = ENABLE_HINT.format(hub_dir=default_weights_path().parent)
    path = Path(weights) if weights else default_weights_path()
    if importlib.util.find_spec("pytorch_fid") is None:
        reason = "the package pytorch-fid is not installed"
    elif not path.is_file():
        reason = f"the InceptionV3 weights {path} are missing"
    else:
        return FID2DStatus(True, f"2D FID with InceptionV3 weights {path}", path)
    if weights:
        raise InputError(f"--inception-weights was given but {reason}: `pip install pytorch-fid` and pass the "
                         f"{INCEPTION_FILENAME} file, or leave --inception-weights out")
    return FID2DStatus(False, f"2D FID skipped: {reason}; {hint}")


def slice_images(volume_dhw: np.ndarray) -> torch.Tensor:
    """The volume's axial slices as (D, 3, H, W) images in [0, 1], each min-max scaled and quantised to 8 bits
    (a constant slice becomes black)."""
    v = np.asarray(volume_dhw, dtype=np.float64)
    lo = v.min(axis=(1, 2), keepdims=True)
    span = v.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (v - lo) / np.where(span > 0, span, 1.0), 0.0)
    grey = np.floor(255.0 * scaled).astype(np.uint8).astype(np.float32) / 255.0
    return torch.from_numpy(grey)[:, None].repeat(1, 3, 1, 1)


class InceptionSliceFeatures:
    """pytorch-fid's FID InceptionV3 loaded from a local weights file; call it on volumes to get slice features."""

    def __init__(self, status: FID2DStatus, device: str = "cpu", batch_size: int = 32) -> None:
        from pytorch_fid.inception import InceptionV3

        if not status.available or status.weights is None:
            raise RuntimeError(status.message)
        previous = torch.hub.get_dir()
        with tempfile.TemporaryDirectory() as hub:
            os.makedirs(Path(hub) / "checkpoints")
            os.symlink(status.weights.resolve(), Path(hub) / "checkpoints" / INCEPTION_FILENAME)
            torch.hub.set_dir(hub)
            try:
                self.model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[POOL3_FEATURES]]).eval().to(device)
            finally:
                torch.hub.set_dir(previous)
        self.device = device
        self.batch_size = batch_size

    def __call__(self, volume_dhw: np.ndarray) -> np.ndarray:
        """(D, 2048) pool3 features of the volume's axial slices."""
        images = slice_images(volume_dhw)
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = images[start: start + self.batch_size].to(self.device)
                out.append(self.model(batch)[0].flatten(1).cpu().numpy().astype(np.float64))
        return np.concatenate(out)
