"""The native checkpoint: one safetensors file holding weights, w_avg, latent directions and JSON metadata.

Loading never executes code from the file, verifies a sha256 over every tensor and the metadata, and turns
truncated, corrupt, tampered or foreign files into one CheckpointError that says what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

import torch

from . import __version__
from .architecture import Architecture
from .errors import CheckpointError, InputError
from .files import _json_default, save_safetensors

FORMAT = "cowgan-generator"
FORMAT_VERSION = 1
METADATA_KEY = "cowgan"
CHECKSUM_KEY = "sha256"
W_AVG_KEY = "w_avg"
DIRECTION_PREFIX = "directions."
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
ZIP_MAGIC = b"PK\x03\x04"  # how torch.save's zip archives begin
TEXT_PROBE_BYTES = 512  # how much of a file is read to tell what it is
PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass
class Checkpoint:
    """What a native checkpoint holds, in memory."""

    architecture: Architecture
    state_dict: Dict[str, torch.Tensor]
    w_avg: torch.Tensor
    metadata: Dict[str, Any]
    directions: Dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    sha256: str = ""


def content_sha256(tensors: Mapping[str, torch.Tensor], metadata_json: str) -> str:
    """Checksum over the metadata text and every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256(metadata_json.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d tensors too
    return h.hexdigest()


def weights_sha256(ckpt: Checkpoint) -> str:
    """sha256 of the weights and w_avg alone, as float32: what generated volumes depend on. Unlike the file's content
    checksum it ignores metadata and latent directions, and a reference .pt converted in memory has it too."""
    digest = hashlib.sha256()
    for key, tensor in sorted({**ckpt.state_dict, W_AVG_KEY: ckpt.w_avg}.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: PathLike, ckpt: Checkpoint) -> str:
    """Write `ckpt` atomically (temporary file, then rename) and return its content sha256."""
    path = Path(path)
    tensors: Dict[str, torch.Tensor] = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    if W_AVG_KEY in tensors or any(k.startswith(DIRECTION_PREFIX) for k in tensors):
        raise InputError(f"state_dict keys may not be named {W_AVG_KEY!r} or start with {DIRECTION_PREFIX!r}")
    tensors[W_AVG_KEY] = ckpt.w_avg.detach().float().cpu().contiguous()
    for name, direction in ckpt.directions.items():
        tensors[DIRECTION_PREFIX + name] = direction.detach().float().cpu().contiguous()
    metadata = dict(ckpt.metadata)
    metadata.update(format=FORMAT, format_version=FORMAT_VERSION, architecture=ckpt.architecture.to_dict())
    metadata.setdefault("software_version", __version__)
    metadata_json = json.dumps(metadata, sort_keys=True, default=_json_default)
    checksum = content_sha256(tensors, metadata_json)
    save_safetensors(path, tensors, {METADATA_KEY: metadata_json, CHECKSUM_KEY: checksum})
    ckpt.sha256 = checksum
    ckpt.metadata = json.loads(metadata_json)  # as loading will read it (NumPy values and tuples become JSON's)
    return checksum


def model_file_format(path: PathLike) -> str:
    """What a file is by its first bytes, never its name: "safetensors" (an 8-byte header length, then a JSON header),
    "pytorch" (a pickle, or a zip archive that holds one or is cut short, as torch.save writes), "zip" (a whole zip
    archive without a pickle), "text" (no control characters but tabs, line ends and escape) or "" (none of these,
    empty, or unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(TEXT_PROBE_BYTES)
    except OSError:
        return ""
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if 2 <= header_len <= MAX_HEADER_BYTES and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(ZIP_MAGIC):
        return "zip" if _whole_zip_without_pickle(path) else "pytorch"
    if head[:1] == b"\x80" or head and ZIP_MAGIC.startswith(head):  # a legacy pickle, or a zip cut to its first bytes
        return "pytorch"
    if head and not any(b < 9 or 13 < b < 32 and b != 27 for b in head):
        return "text"
    return ""


def _whole_zip_without_pickle(path: PathLike) -> bool:
    """Whether a zip archive reads whole and holds no data.pkl, which every torch.save archive has."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return False  # a cut or damaged archive: its reader names the damage
    return not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names)


MISNAMED_PYTORCH = ("it is a PyTorch checkpoint (a reference model_N.pt) named like a native model: rename it to .pt, "
                    "then pass it as it is or convert it with `cowgan import-reference MODEL.pt --out MODEL.safetensors`")


def misnamed_pytorch(path: PathLike) -> bool:
    """Whether `path` is a PyTorch checkpoint named .safetensors, which torch.load reads as safetensors and fails on:
    its reader says MISNAMED_PYTORCH rather than calling it damaged."""
    return Path(path).name.endswith(".safetensors") and model_file_format(path) == "pytorch"


def _diagnose(path: Path) -> str:
    """Why a file that failed to load is not a usable checkpoint, and what to do about it."""
    size = path.stat().st_size
    kind = model_file_format(path)
    if size < 8 and kind != "text":  # too short for any model: a cut download, whatever its first bytes resemble
        return "the file is empty or truncated: re-download or re-export it"
    if misnamed_pytorch(path):
        return MISNAMED_PYTORCH
    if kind == "pytorch":
        return ("it is a PyTorch pickle (.pt), not a native checkpoint: convert a reference checkpoint with "
                "`cowgan import-reference MODEL.pt --out MODEL.safetensors`")
    if kind == "safetensors":
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > size - 8:
                return (f"the file is truncated (its header alone needs {header_len + 8:,} bytes, the file has "
                        f"{size:,}): re-download or re-export it")
            try:
                if isinstance(json.loads(f.read(header_len)), dict):
                    return "the file is truncated or corrupt: re-download or re-export it"
            except ValueError:
                pass
    elif kind == "zip":
        return ("it is a zip archive without a PyTorch pickle, not a model: pass a .safetensors model written by "
                "`cowgan export` or `cowgan import-reference`, or a reference model_N.pt")
    elif kind == "text":
        return (f"it is a text file ({size:,} bytes), not a model: pass a .safetensors model written by `cowgan export` "
                "or `cowgan import-reference`, or a reference model_N.pt")
    return "it is not a CircleOfWillisGAN checkpoint: pass a file written by `cowgan export` or `cowgan import-reference`"


OTHER_COWGAN_FILES = {  # metadata key of the project's other safetensors files: what the file is
    "cowgan_projection": "a projection result (`cowgan project` writes it beside the reconstruction)",
    "cowgan_variant_classifier": "a variant classifier (`cowgan name-directions` writes it beside the model)",
}


def reference_state_keys(keys: Iterable[str]) -> bool:
    """Whether tensor names are those of the reference trainer's GAN state dict (it has the EMA generator GE)."""
    return any(key.startswith("GE.") for key in keys)


def _other_safetensors(header: Mapping[str, str], keys: Iterable[str]) -> str:
    """Why a readable safetensors file without model metadata is not a model, and what to pass instead."""
    for key, what in OTHER_COWGAN_FILES.items():
        if key in header:
            return f"it is {what}, not a generator model: pass the model's own .safetensors file"
    if reference_state_keys(keys):
        return ("it holds a reference checkpoint's state dict (its GE.* tensors) saved as safetensors: convert it with "
                "`cowgan import-reference FILE --out MODEL.safetensors`")
    return ("it is a safetensors file without CircleOfWillisGAN model metadata: pass a file written by `cowgan export` "
            "or `cowgan import-reference`")


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read and verify a native checkpoint; raise CheckpointError naming the problem and the fix."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: pass the model's .safetensors file inside it")
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist: check the path, or use the demo model ('demo')")
    if model_file_format(path) != "safetensors":  # its first bytes say it is something else: say what
        raise CheckpointError(f"cannot read model {path}: {_diagnose(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read model {path} ({reason}): {_diagnose(path)}") from exc
    if METADATA_KEY not in header:
        raise CheckpointError(f"cannot read model {path}: {_other_safetensors(header, tensors)}")
    if CHECKSUM_KEY not in header:
        raise CheckpointError(f"model {path} has no {CHECKSUM_KEY} checksum (modified or rewritten by other software): "
                              "re-download or re-export it")
    try:
        metadata = json.loads(header[METADATA_KEY])
        if not isinstance(metadata, dict):
            raise ValueError(f"a JSON {type(metadata).__name__}, not an object")
        version = metadata.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"format_version {version!r} is not a whole number")
    except ValueError as exc:
        raise CheckpointError(f"model {path} has unreadable metadata ({exc}): re-export it") from exc
    if metadata.get("format") != FORMAT or version > FORMAT_VERSION:  # first: a newer file's fields may be new too
        raise CheckpointError(
            f"model {path} is format {metadata.get('format')!r} v{metadata.get('format_version')}, this software "
            f"reads {FORMAT!r} up to v{FORMAT_VERSION}: upgrade CircleOfWillisGAN"
        )
    try:
        architecture = Architecture.from_dict(metadata["architecture"])
        _check_geometry(metadata.get("data", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"model {path} has unreadable metadata ({exc}): re-export it") from exc
    checksum = content_sha256(tensors, header[METADATA_KEY])
    if checksum != header[CHECKSUM_KEY]:
        raise CheckpointError(
            f"model {path} failed its sha256 check (modified or damaged since it was written): re-download or re-export it"
        )
    if W_AVG_KEY not in tensors:
        raise CheckpointError(f"model {path} has no {W_AVG_KEY!r} tensor: re-export it")
    broken = sorted(k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if broken:
        raise CheckpointError(f"model {path} has NaN or infinite values in {', '.join(broken[:3])}"
                              f"{' and more' if len(broken) > 3 else ''}: the training run diverged; export an earlier checkpoint")
    w_avg = tensors.pop(W_AVG_KEY)
    directions = {k[len(DIRECTION_PREFIX):]: tensors.pop(k) for k in list(tensors) if k.startswith(DIRECTION_PREFIX)}
    mismatch = _architecture_mismatch(architecture, tensors, w_avg, directions)
    if mismatch:
        raise CheckpointError(f"model {path} does not match its architecture ({mismatch}): it was written by other "
                              "software or an incompatible version; re-export or re-import it with this one")
    return Checkpoint(architecture, tensors, w_avg, metadata, directions, checksum)


def _check_geometry(data: Any) -> None:
    """The metadata's "data" block: a mapping whose affine and spacing, where given, are usable (ValueError if not)."""
    from .volume_io import check_affine, check_spacing

    if not isinstance(data, dict):
        raise ValueError(f"'data' must be a mapping, got {type(data).__name__}")
    if "affine" in data:
        check_affine(data["affine"])
    if "spacing_mm" in data:
        check_spacing(data["spacing_mm"])
    _check_normalisation(data.get("normalisation"))


def _check_normalisation(recorded: Any) -> None:
    """A recorded normalisation that scans can be scaled by: none or a description (the reference's text), or a
    mapping naming a known method with, where given, percentiles 0 <= LOW < HIGH <= 100 (ValueError if not)."""
    from .preprocess import NORMALISATIONS

    if recorded is None or isinstance(recorded, str):
        return
    if not isinstance(recorded, dict):
        raise ValueError(f"'normalisation' must be a mapping, got {type(recorded).__name__}")
    if recorded.get("method") not in NORMALISATIONS:
        raise ValueError(f"normalisation method {recorded.get('method')!r} is not one of {', '.join(NORMALISATIONS)}")
    if "percentiles" not in recorded:
        return
    bounds = recorded["percentiles"]
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds)
            or not 0 <= bounds[0] < bounds[1] <= 100):
        raise ValueError(f"normalisation percentiles {bounds!r} are not two numbers 0 <= LOW < HIGH <= 100")


def _architecture_mismatch(arch: Architecture, tensors: Mapping[str, torch.Tensor], w_avg: torch.Tensor,
                           directions: Mapping[str, torch.Tensor]) -> str:
    """What differs between the stored weights and those the stored architecture builds ('' when they fit)."""
    from .generator_model import GeneratorModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GeneratorModel(arch).state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        return "; ".join(part for part in (f"missing {', '.join(missing[:3])}" if missing else "",
                                           f"unexpected {', '.join(extra[:3])}" if extra else "") if part)
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            return f"{key} has shape {tuple(tensors[key].shape)}, expected {shape}"
    if tuple(w_avg.shape) != (arch.latent_dim,):
        return f"{W_AVG_KEY} has shape {tuple(w_avg.shape)}, expected ({arch.latent_dim},)"
    for key, tensor in {**tensors, W_AVG_KEY: w_avg}.items():
        if not tensor.is_floating_point():
            return f"{key} holds {tensor.dtype} values, expected floating point"
    for key, tensor in directions.items():
        if tensor.ndim != 2 or tensor.shape[1] != arch.latent_dim or not tensor.is_floating_point():
            return (f"{DIRECTION_PREFIX}{key} is {tensor.dtype} of shape {tuple(tensor.shape)}, expected floating point "
                    f"(k, {arch.latent_dim})")
    return ""

