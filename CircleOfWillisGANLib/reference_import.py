"""Exact import of checkpoints written by the published CoW 3D StyleGAN (claim-berlin, lucidrains-style).

The EMA networks (SE, GE) are what the reference generates with; they are renamed to this project's keys,
fmap_max and latent_dim are inferred from tensor shapes, and the result uses the reference noise convention.
For fine-tuning, the live networks (S, G) and the discriminator D convert too (`reference_networks`).
The truncation centre is, as in the reference, the mean w of the live mapping network S (not of SE).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Set, Tuple, Union

import torch

from .architecture import Architecture
from .checkpoint import (METADATA_KEY, MISNAMED_PYTORCH, Checkpoint, misnamed_pytorch, model_file_format,
                         reference_state_keys)
from .files import file_sha256, path_problem, zip_damage
from .errors import CheckpointError, InputError
from .generator_model import GeneratorModel
from .networks.discriminator import Discriminator
from .volume_io import DEFAULT_SPACING_MM, check_spacing, default_affine

REFERENCE_DEPTH = 32  # the reference grows depth to 32 slices at most (image_size 16 gives 16^3)
# what the reference trainer writes into models/NAME/.config.json
REFERENCE_CONFIG_KEYS = ("image_size", "network_capacity", "transparent", "fq_layers", "fq_dict_size", "attn_layers",
                         "no_const", "lr_mlp")
UNSUPPORTED_OPTIONS = ("fq_layers", "attn_layers", "no_const")  # the reference code cannot build these either
# `transparent` only asks for RGBA output, which the reference's grayscale blocks ignore: its tensors are the same
TRAINING_STATE_FORMAT = "cowgan-train-state"  # training/state.py FORMAT (the library does not import training)
REFERENCE_LR_MLP = 0.1  # the reference trainer's default mapping learning-rate multiplier
CONFIG_FIX = "pass the run's own .config.json (`cowgan import-reference MODEL.pt --config CONFIG.json`)"
BLUR_BUFFER = re.compile(r"GE?\.blocks\.\d+\.to_grayscale\.upsample\.1\.f")  # a constant, checked, not converted
log = logging.getLogger(__name__)


def read_reference_config(model_path: Path, config_path: Optional[Path]) -> Dict[str, Any]:
    """The run's .config.json (next to model_N.pt unless given); {} when there is none."""
    path = config_path or model_path.with_name(".config.json")
    if config_path is None and not path.exists():  # a folder of that name is named as such below
        log.warning("no .config.json beside %s: assuming the reference's defaults (lr_mlp %s); if the run used other "
                    "settings, put its models/NAME/.config.json beside it (`cowgan import-reference` also takes --config "
                    "CONFIG.json)", model_path, REFERENCE_LR_MLP)
        return {}
    problem = path_problem(path)
    if problem:
        raise CheckpointError(f"config file {path} {problem}: pass the run's .config.json")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"config {path} is not valid JSON ({exc}): pass the run's .config.json") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"config {path} is not a reference .config.json (a JSON object of run settings): "
                              "pass the run's .config.json")
    if not set(config) & set(REFERENCE_CONFIG_KEYS):  # e.g. `cowgan train`'s config.json, or a phantom's record
        raise CheckpointError(f"config {path} is not a reference .config.json: it holds none of its settings "
                              f"({', '.join(REFERENCE_CONFIG_KEYS)}): pass the run's own .config.json")
    return config


def _load_state(path: Path) -> Dict[str, torch.Tensor]:
    problem = path_problem(path)
    if problem:
        raise CheckpointError(f"reference checkpoint {path} {problem}: pass models/NAME/model_N.pt")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        raise CheckpointError(f"{path} is empty or truncated ({len(head)} bytes): copy it again from the reference "
                              "run's models/NAME/ folder")
    kind = model_file_format(path)
    if kind == "safetensors":
        return _without_wrapper_prefix(_safetensors_state(path))
    if kind == "zip":
        raise CheckpointError(f"{path} is a zip archive without a PyTorch pickle, not a checkpoint: pass "
                              "models/NAME/model_N.pt written by the reference trainer")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: pass models/NAME/model_N.pt written by the reference trainer")
    if misnamed_pytorch(path):
        raise CheckpointError(f"cannot read reference checkpoint {path}: {MISNAMED_PYTORCH}")
    damage = zip_damage(path) if head.startswith(b"PK\x03\x04") else None  # torch.load checks no CRC
    if damage:
        raise CheckpointError(f"reference checkpoint {path} is truncated or corrupt ({damage}): copy it again from "
                              "the reference run's models/NAME/ folder")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors, which a weights-only load refuses (no code from a file "
            "is ever run): pass a checkpoint saved by the reference trainer"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors... for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read reference checkpoint {path} ({first}): it is truncated or corrupt; copy it again from "
            "the reference run's models/NAME/ folder"
        ) from exc
    if isinstance(data, dict) and data.get("format") == TRAINING_STATE_FORMAT:
        raise CheckpointError(f"{path} is a training run's resume state, not a model: turn the run into one with "
                              "`cowgan export RUN --out MODEL.safetensors`")
    if not isinstance(data, dict) or not isinstance(data.get("GAN"), dict):
        raise CheckpointError(f"{path} is not a reference checkpoint (no 'GAN' state dict): pass models/NAME/model_N.pt")
    state = data["GAN"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} is not a reference checkpoint (its 'GAN' entry is not a state dict of named "
                              "tensors): pass models/NAME/model_N.pt")
    return _without_wrapper_prefix(state)


def _safetensors_state(path: Path) -> Dict[str, torch.Tensor]:
    """The reference state dict saved as safetensors (GE.* and the other networks' tensors, no model metadata)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            keys = list(f.keys())
            if METADATA_KEY in header:
                raise CheckpointError(f"{path} is already a CircleOfWillisGAN model (safetensors), not a reference "
                                      "checkpoint: name it .safetensors and pass it to --model as it is; it needs no "
                                      "import")
            if not reference_state_keys(_without_wrapper_prefix(dict.fromkeys(keys))):
                raise CheckpointError(f"{path} is a safetensors file without a reference generator (no GE.* tensors): "
                                      "pass models/NAME/model_N.pt written by the reference trainer")
            return {key: f.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read {path} ({reason}): it is truncated or corrupt; copy it again") from exc


def _without_wrapper_prefix(state: Dict[str, Any]) -> Dict[str, Any]:
    """The state dict without the prefix that wrapping the whole GAN in DataParallel ("module.") or torch.compile
    ("_orig_mod.") puts before every name."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(key.startswith(prefix) for key in state):
            return _without_wrapper_prefix({key[len(prefix):]: value for key, value in state.items()})
    return state


def _dims(state: Dict[str, torch.Tensor], key: str, ndim: int) -> Tuple[int, ...]:
    """The shape of `state[key]`, which must exist and have `ndim` dimensions, else a CheckpointError."""
    tensor = state.get(key)
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"reference checkpoint lacks {key}: it is incomplete or from another architecture")
    if tensor.dim() != ndim:
        raise CheckpointError(f"reference tensor {key} has shape {tuple(tensor.shape)}, expected {ndim} dimensions: "
                              "the checkpoint is damaged or from another architecture")
    return tuple(tensor.shape)


def _take(state: Dict[str, torch.Tensor], key: str, shape: Sequence[int]) -> torch.Tensor:
    """`state[key]` as float32 after checking its presence, its exact shape and that it is finite."""
    if _dims(state, key, len(shape)) != tuple(shape):
        raise CheckpointError(f"reference tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}: "
                              "the checkpoint is damaged or from another architecture")
    tensor = state[key]
    if not torch.isfinite(tensor).all():
        raise CheckpointError(f"reference tensor {key} contains NaN or Inf: the run diverged or the file is damaged; "
                              "use an earlier models/NAME/model_N.pt or copy it again")
    return tensor.float()


def infer_architecture(state: Dict[str, torch.Tensor], config: Dict[str, Any], depth: Optional[int] = None
                       ) -> Architecture:
    """Rebuild the reference's architecture from tensor shapes, cross-checked against .config.json. `depth` is the
    slice count of a run whose code was edited from the reference's 32: no tensor or config records it."""
    for option in UNSUPPORTED_OPTIONS:
        if config.get(option):
            raise CheckpointError(f"reference option {option}={config[option]!r}: the reference code cannot build such a "
                                  f"model, so this .config.json is not this checkpoint's; {CONFIG_FIX}")
    # Counted from every tensor of the networks, so that a missing tensor is named below, not taken for a smaller model
    ema_mapping, ema_blocks = _indices(state, r"SE\.net\.(\d+)\."), _indices(state, r"GE\.blocks\.(\d+)\.")
    if not ema_mapping or not ema_blocks:
        raise CheckpointError("reference checkpoint has no EMA networks (SE, GE): pass a checkpoint saved by the reference trainer")
    latent_dim = _dims(state, "SE.net.0.weight", 2)[1]
    mapping_layers = max(ema_mapping | _indices(state, r"S\.net\.(\d+)\.")) // 2 + 1
    num_blocks = max(ema_blocks | _indices(state, r"G\.blocks\.(\d+)\.")) + 1
    image_size = 2 ** (num_blocks + 1)
    if _config_whole_number(config, "image_size", image_size) != image_size:
        raise CheckpointError(f".config.json says image_size {config['image_size']} but the checkpoint has {num_blocks} "
                              f"blocks ({image_size}); {CONFIG_FIX}")
    last_channels = _dims(state, f"GE.blocks.{num_blocks - 1}.conv1.weight", 5)[0]
    capacity = _config_whole_number(config, "network_capacity", last_channels // 2)
    lr_mul = config.get("lr_mlp", REFERENCE_LR_MLP)
    if isinstance(lr_mul, bool) or not isinstance(lr_mul, (int, float)) or not 0 < lr_mul < math.inf:
        raise CheckpointError(f".config.json has lr_mlp {lr_mul!r}, which must be a positive number: {CONFIG_FIX}")
    g_channels = [_dims(state, f"GE.blocks.{i}.conv1.weight", 5)[0] for i in range(num_blocks)]
    d_channels = [v.shape[0] for k, v in state.items() if re.fullmatch(r"D\.blocks\.\d+\.conv_res\.weight", k)]
    fmap_max = max(g_channels + d_channels)
    arch = Architecture(latent_dim=latent_dim, mapping_layers=mapping_layers, mapping_lr_mul=lr_mul,
                        network_capacity=capacity, fmap_max=fmap_max,
                        output_shape=(_depth(depth, image_size), image_size, image_size), noise_mode="reference")
    if arch.generator_channels() != g_channels:
        raise CheckpointError(f"generator channels {g_channels} do not follow the reference rule for capacity {capacity}: "
                              f"check network_capacity in .config.json, or {CONFIG_FIX}")
    return arch


def _depth(depth: Optional[int], image_size: int) -> int:
    """The slice count of the run's volumes: the reference's (32, or the image size below it) unless given."""
    if depth is None:
        return min(REFERENCE_DEPTH, image_size)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth > image_size or depth & (depth - 1):
        raise InputError(f"a depth of {depth!r} slices does not fit this reference run: give a power of two from 4 to "
                         f"its image size {image_size} (the reference's is {min(REFERENCE_DEPTH, image_size)})")
    return depth


def _indices(state: Dict[str, torch.Tensor], pattern: str) -> Set[int]:
    """The layer numbers that the keys matching `pattern` (one group: the number) hold tensors of."""
    return {int(m.group(1)) for key in state if (m := re.match(pattern, key))}


def _config_whole_number(config: Dict[str, Any], key: str, default: int) -> int:
    """A positive whole-number setting of .config.json (`default` when absent), or a CheckpointError naming it."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f".config.json has {key} {value!r}, which must be a positive whole number: {CONFIG_FIX}")
    return value


def convert_state(state: Dict[str, torch.Tensor], arch: Architecture, mapping: str = "SE",
                  synthesis: str = "GE") -> Dict[str, torch.Tensor]:
    """Rename and reshape the reference's EMA mapping SE and synthesis GE tensors (or, with "S" and "G", the live
    networks') into this project's GeneratorModel keys."""
    target = GeneratorModel(arch).state_dict()
    used = set()

    def take(key: str, shape: Sequence[int]) -> torch.Tensor:
        used.add(key)
        return _take(state, key, shape)

    out: Dict[str, torch.Tensor] = {}
    for i in range(arch.mapping_layers):
        for p in ("weight", "bias"):
            key = f"mapping.layers.{i}.{p}"
            out[key] = take(f"{mapping}.net.{2 * i}.{p}", target[key].shape)
    out["synthesis.const"] = take(f"{synthesis}.initial_block", target["synthesis.const"].shape)
    for p in ("weight", "bias"):
        out[f"synthesis.input_conv.{p}"] = take(f"{synthesis}.initial_conv.{p}", target[f"synthesis.input_conv.{p}"].shape)
    for i in range(arch.num_blocks):
        src, dst = f"{synthesis}.blocks.{i}", f"synthesis.blocks.{i}"
        pairs = {
            "conv1.weight": "conv1.weight", "to_style1.weight": "conv1.affine.weight", "to_style1.bias": "conv1.affine.bias",
            "conv2.weight": "conv2.weight", "to_style2.weight": "conv2.affine.weight", "to_style2.bias": "conv2.affine.bias",
            "to_noise1.bias": "noise1.bias", "to_noise2.bias": "noise2.bias",
            "to_grayscale.conv.weight": "to_image.weight", "to_grayscale.to_style.weight": "to_image.affine.weight",
            "to_grayscale.to_style.bias": "to_image.affine.bias",
        }
        for s, d in pairs.items():
            out[f"{dst}.{d}"] = take(f"{src}.{s}", target[f"{dst}.{d}"].shape)
        for n in (1, 2):
            channels = target[f"{dst}.noise{n}.weight"].shape[0]
            out[f"{dst}.noise{n}.weight"] = take(f"{src}.to_noise{n}.weight", (channels, 1))[:, 0].clone()
        blur_key = f"{src}.to_grayscale.upsample.1.f"
        if i < arch.num_blocks - 1 and blur_key in state and not torch.equal(state[blur_key].float(), torch.tensor([1.0, 2.0, 1.0])):
            raise CheckpointError(f"{blur_key} is {state[blur_key].tolist()}, not the [1, 2, 1] blur this importer implements")
    _refuse_unused(state, (f"{synthesis}.", f"{mapping}."), used, "generator")
    return out


def convert_discriminator(state: Dict[str, torch.Tensor], arch: Architecture) -> Dict[str, torch.Tensor]:
    """Rename the reference's discriminator D into this project's Discriminator keys (the same residual blocks, blur
    and strides), so that a reference run can be fine-tuned. Its last layer is negated: the reference scores real
    volumes low, this project's losses (training/losses.py) score them high, so D keeps its judgement."""
    target = Discriminator(arch).state_dict()
    used = set()
    out: Dict[str, torch.Tensor] = {}
    for i in range(len(arch.discriminator_channels()) - 1):
        src, dst = f"D.blocks.{i}", f"blocks.{i}"
        for s, d in (("conv_res", "residual"), ("net.0", "conv1"), ("net.2", "conv2"), ("downsample.1", "down")):
            for p in ("weight", "bias"):
                if f"{dst}.{d}.{p}" in target:
                    used.add(f"{src}.{s}.{p}")
                    out[f"{dst}.{d}.{p}"] = _take(state, f"{src}.{s}.{p}", target[f"{dst}.{d}.{p}"].shape)
        blur_key = f"{src}.downsample.0.f"
        if blur_key in state:
            used.add(blur_key)
            if not torch.equal(state[blur_key].float(), torch.tensor([1.0, 2.0, 1.0])):
                raise CheckpointError(f"{blur_key} is {state[blur_key].tolist()}, not the [1, 2, 1] blur this "
                                      "importer implements")
    for name, sign in (("final_conv", 1.0), ("to_logit", -1.0)):
        for p in ("weight", "bias"):
            used.add(f"D.{name}.{p}")
            out[f"{name}.{p}"] = sign * _take(state, f"D.{name}.{p}", target[f"{name}.{p}"].shape)
    _refuse_unused(state, ("D.",), used, "discriminator")
    return out


def _refuse_unused(state: Dict[str, torch.Tensor], networks: Tuple[str, ...], used: Set[str], what: str) -> None:
    """A CheckpointError if the networks' tensors hold one the conversion had no place for (a modified reference)."""
    unused = sorted(k for k in state if k.startswith(networks) and k not in used and not BLUR_BUFFER.fullmatch(k))
    if unused:
        raise CheckpointError(f"reference checkpoint holds {len(unused)} {what} tensor(s) this importer has no place "
                              f"for ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}): it comes from a "
                              "modified reference (attention or other layers), which cannot be imported exactly")


def is_reference_checkpoint(path: Union[str, Path]) -> bool:
    """Whether `path` is a checkpoint of the reference trainer: a PyTorch file holding its "GAN" state dict, or that
    state dict saved as safetensors; read lazily where the format allows; False for anything else, including a
    file too damaged to tell."""
    path = Path(path)
    kind = model_file_format(path) if path.is_file() else ""
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return METADATA_KEY not in (f.metadata() or {}) and reference_state_keys(
                    _without_wrapper_prefix(dict.fromkeys(f.keys())))
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return False
    if kind != "pytorch" or misnamed_pytorch(path):
        return False
    for mmap in (True, False):  # mmap reads zip archives lazily; a legacy pickle needs the full read
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # damaged or foreign: the caller's own reader names the problem
            continue
        return isinstance(data, dict) and isinstance(data.get("GAN"), dict)
    return False


def reference_networks(model_path: str) -> Tuple[Architecture, Dict[str, Dict[str, torch.Tensor]]]:
    """A reference run's architecture (at the reference's slice count; no tensor depends on it) and its networks as
    this project's state dicts, to fine-tune it: "G" (live mapping S and synthesis G), "G_ema" (SE, GE) and "D"."""
    path = Path(model_path)
    state = _load_state(path)
    arch = infer_architecture(state, read_reference_config(path, None))  # its .config.json is beside it
    if not any(key.startswith("S.net.") for key in state) or not any(key.startswith("D.") for key in state):
        raise CheckpointError(f"{path} holds only the EMA generator (no live networks S, G and discriminator D), "
                              "which generates but cannot be trained on: pass a checkpoint the reference trainer "
                              "saved whole (to generate from this one, use `cowgan import-reference`)")
    return arch, {"G": convert_state(state, arch, mapping="S", synthesis="G"), "G_ema": convert_state(state, arch),
                  "D": convert_discriminator(state, arch)}


def import_reference(model_path: str, config_path: Optional[str] = None,
                     spacing_mm: Sequence[float] = DEFAULT_SPACING_MM, depth: Optional[int] = None) -> Checkpoint:
    """Convert a reference `model_N.pt` (+ .config.json) into a native Checkpoint (EMA networks, w_avg); `depth`
    only for a run whose code was edited to another slice count than the reference's."""
    spacing_mm = check_spacing(spacing_mm)
    path = Path(model_path)
    state = _load_state(path)  # first: a missing or foreign file is the problem to report, not a missing config
    config = read_reference_config(path, Path(config_path) if config_path else None)
    arch = infer_architecture(state, config, depth)
    model = GeneratorModel(arch)
    model.load_state_dict(convert_state(state, arch))
    w_avg, centre = _truncation_centre(state, arch, model, path)
    _check_finite(model, w_avg, arch, path)
    step = re.fullmatch(r"model_(\d+)\.pt", path.name)
    metadata = {
        "name": path.parent.name or path.stem,
        "data": {"affine": default_affine(arch.output_shape, spacing_mm).tolist(), "spacing_mm": list(spacing_mm),
                 "orientation": "RAS", "normalisation": "per-volume min-max to [0, 1]"},
        "w_avg": {"networks": centre, "num_samples": 10_000, "seed": 0},
        "provenance": {"source": "reference checkpoint (claim-berlin 3D StyleGAN)", "file": path.name,
                       "file_sha256": file_sha256(path), "checkpoint_number": int(step.group(1)) if step else None,
                       "reference_config": config},
    }
    return Checkpoint(arch, model.state_dict(), w_avg, metadata)


def _check_finite(model: GeneratorModel, w_avg: torch.Tensor, arch: Architecture, path: Path) -> None:
    """Refuse a conversion whose weights or truncation centre hold NaN or Inf, which would only fail later when loaded
    as "the training run diverged"; an lr_mlp unlike the reference's is named as the likely cause."""
    tensors = {**model.state_dict(), "w_avg": w_avg}
    broken = sorted(k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if not broken:
        return
    cause = (f".config.json's lr_mlp {arch.mapping_lr_mul!r} is likely not this run's (the reference trains with "
             f"{REFERENCE_LR_MLP}): {CONFIG_FIX}" if arch.mapping_lr_mul != REFERENCE_LR_MLP else
             "the run diverged; use an earlier models/NAME/model_N.pt")
    raise CheckpointError(f"importing {path} gives NaN or infinite values in {', '.join(broken[:3])}: {cause}")


def _truncation_centre(state: Dict[str, torch.Tensor], arch: Architecture, model: GeneratorModel,
                       path: Path) -> Tuple[torch.Tensor, str]:
    """The mean w that truncation pulls towards and which networks gave it: the live mapping network S, as the
    reference computes it at generation time (from 10,000 seeded z rather than its 2,000 unseeded ones); the EMA
    mapping SE, with a warning, for a checkpoint stripped of S."""
    if not any(key.startswith("S.net.") for key in state):
        log.warning("%s holds no live mapping network (S): the truncation centre comes from the EMA mapping (SE), so "
                    "outputs at psi < 1 differ slightly from the reference's", path)
        return model.mean_w(), "EMA mapping (SE); the checkpoint has no live mapping (S)"
    live = GeneratorModel(arch)
    live.load_state_dict(convert_state(state, arch, mapping="S"))
    return live.mean_w(), "live mapping (S), as the reference truncates"
