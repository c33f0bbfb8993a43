"""MedicalNet ResNet-10 (Chen et al. 2019, 3D ResNet pre-trained on 23 medical datasets) as a 3D feature
extractor for the MedicalNet distance (MD) of the paper: 512 globally averaged activations per volume.

The weights are never downloaded: the user passes the `resnet_10_23dataset.pth` file of the MedicalNet
release, which is checked against its known SHA-256 before it is unpickled (with weights_only=True).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from ..files import file_sha256
from ..errors import CheckpointError, InputError

log = logging.getLogger(__name__)

MEDICALNET_FILENAME = "resnet_10_23dataset.pth"
MEDICALNET_SHA256 = "afa8055f3e47f4a18239495d92a7abc587902c69c31c743de2b2784653b72605"
FEATURE_DIM = 512
# Parameters of the unused segmentation head that some MedicalNet files carry.
IGNORED_PREFIXES = ("conv_seg.",)


def _conv3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with batch norm and a residual connection (1x1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3(cin, cout, stride, dilation)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = _conv3(cout, cout, 1, dilation)
        self.bn2 = nn.BatchNorm3d(cout)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet10Encoder(nn.Module):
    """MedicalNet's ResNet-10 trunk: 7^3 stride-2 stem, max pool, four one-block stages (64, 128 stride 2,
    256 dilation 2, 512 dilation 4), global average pool. Parameter names match the MedicalNet files."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, dilation=2))
        self.layer4 = nn.Sequential(BasicBlock(256, FEATURE_DIM, dilation=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


def _clean_state_dict(raw: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    cleaned = {}
    for key, value in raw.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if not name.startswith(IGNORED_PREFIXES):
            cleaned[name] = value
    return cleaned


def check_medicalnet_file(path: Union[str, Path], expected_sha256: Optional[str] = MEDICALNET_SHA256) -> None:
    """That `path` is MedicalNet's weights file (by its SHA-256; None skips that with a warning): a command checks it
    before any volume is generated or read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"MedicalNet weights {path} do not exist: pass the path of {MEDICALNET_FILENAME} "
                              "from the MedicalNet release (github.com/Tencent/MedicalNet); nothing is downloaded")
    if expected_sha256 is None:
        log.warning("MedicalNet weights %s are loaded without a checksum check: MD values will not be comparable "
                    "with the paper unless this is the original %s", path, MEDICALNET_FILENAME)
        return
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(f"{path} is not MedicalNet's {MEDICALNET_FILENAME} (sha256 {actual[:16]}..., expected "
                              f"{expected_sha256[:16]}...): pass the unmodified file from the MedicalNet release")


def load_medicalnet(path: Union[str, Path], expected_sha256: Optional[str] = MEDICALNET_SHA256,
                    device: str = "cpu") -> ResNet10Encoder:
    """Load a MedicalNet ResNet-10 file (dict with key 'state_dict', 'module.'-prefixed keys) on `device`.

    The file's SHA-256 must equal `expected_sha256`; pass None only to load weights you trained yourself
    (the check is then skipped with a warning).
    """
    path = Path(path)
    check_medicalnet_file(path, expected_sha256)
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise CheckpointError(f"cannot read MedicalNet weights {path} ({exc}): pass the original {MEDICALNET_FILENAME}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict' entry, so it is not a MedicalNet weights file: "
                              f"pass {MEDICALNET_FILENAME} from the MedicalNet release")
    model = ResNet10Encoder()
    state = _clean_state_dict(payload["state_dict"])
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        detail = "; ".join(f"{label}: {', '.join(keys[:3])}{'...' if len(keys) > 3 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys)
        raise CheckpointError(f"{path} does not hold a MedicalNet ResNet-10 with shortcut type B ({detail}): "
                              f"pass {MEDICALNET_FILENAME}, not another depth or shortcut type")
    model.load_state_dict(state, strict=False)
    return model.eval().to(device)


def medicalnet_input(volume_dhw: np.ndarray, seed: int) -> torch.Tensor:
    """The network input for one min-max normalised (D, H, W) volume, prepared as the paper's evaluation did:
    NIfTI axis order (H, W, D), z-scored with the mean and SD of the non-zero voxels, and zero voxels replaced
    by standard normal noise (here drawn from `seed`, so that features are reproducible)."""
    v = np.asarray(volume_dhw, dtype=np.float64).transpose(1, 2, 0)
    nonzero = v[v > 0]
    if nonzero.size < 2 or nonzero.std() == 0:
        raise InputError("it is constant or empty, so it cannot be normalised for MedicalNet: remove it from the set (a "
                         "model that makes such volumes has collapsed: evaluate another checkpoint)")
    out = (v - nonzero.mean()) / nonzero.std()
    zero = v == 0
    out[zero] = np.random.default_rng(seed).standard_normal(int(zero.sum()))
    return torch.from_numpy(out.astype(np.float32))[None, None]


def noise_seed(seed: int, content_key: str) -> int:
    """A per-volume seed for the background noise that depends on the run seed and the volume's content only."""
    digest = hashlib.sha256(f"{seed}:{content_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def medicalnet_features(model: ResNet10Encoder, volume_dhw: np.ndarray, seed: int) -> np.ndarray:
    """512 MedicalNet features of one normalised (D, H, W) volume."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(medicalnet_input(volume_dhw, seed).to(device))[0].cpu().numpy().astype(np.float64)
