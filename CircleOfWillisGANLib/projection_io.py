"""What a projection writes: the latent (w+ and noise) as safetensors, the volumes, an error map, a report and a plot.

`projection.safetensors` holds tensors "ws" (num_ws, latent) and "noise" plus JSON metadata (model checksum,
metrics, settings); the panel loads it with `load_projection` and moves its sliders around it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from .checkpoint import weights_sha256
from .preprocess import SUFFIXES
from .errors import InputError, require
from .files import atomic_write, file_sha256, save_safetensors, write_json
from .mip import contact_sheet, mip_panel, save_png
from .networks.noise import noise_shape
from .projection import ProjectionConfig, ProjectionResult, beyond_samples_note
from .volume_io import save_volume, spacing_of

LATENT_FILE = "projection.safetensors"
OUTPUT_FILES = {"latent": LATENT_FILE, "target": "target.nii.gz", "reconstruction": "reconstruction.nii.gz",
                "error": "error.nii.gz", "mips": "target_vs_reconstruction_mip.png", "report": "projection.json",
                "plot": "convergence.png"}
METADATA_KEY = "cowgan_projection"
FORMAT = "cowgan-projection"


@dataclasses.dataclass
class ProjectedLatent:
    """A saved projection: the w+ and noise to synthesise it, and its metadata."""

    ws: torch.Tensor  # (num_ws, latent)
    noise: torch.Tensor  # (1, ...) in the model's noise convention
    metadata: Dict[str, Any]


def save_projection(path: Union[str, Path], result: ProjectionResult, metadata: Dict[str, Any]) -> Path:
    """Write the latent of `result` with `metadata` (plus the metrics) as one safetensors file, atomically."""
    info = dict(metadata, format=FORMAT, metrics=result.metrics)
    tensors = {"ws": result.ws.detach().float().contiguous(), "noise": result.noise.detach().float().contiguous()}
    text = json.dumps(info, sort_keys=True, default=str)
    return save_safetensors(path, tensors, {METADATA_KEY: text})


def load_projection(path: Union[str, Path]) -> ProjectedLatent:
    """Read a projection written by `save_projection` (or `cowgan project`); InputError naming the fix if not."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        path = path / LATENT_FILE
    if not path.is_file():
        raise InputError(f"projection {path} does not exist: pass the {LATENT_FILE} (or folder) that `cowgan project` wrote")
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"{path.name} is not a projection's latent: pass the {LATENT_FILE} beside it (or its folder); "
                         f"{OUTPUT_FILES['report']} is the report and the NIfTI files are volumes")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read projection {path} ({exc}): run `cowgan project` again") from exc
    if metadata.get("format") != FORMAT or not {"ws", "noise"} <= set(tensors):
        raise InputError(f"{path} is not a projection: pass the {LATENT_FILE} that `cowgan project` wrote")
    broken = [k for k in ("ws", "noise") if not torch.isfinite(tensors[k].float()).all()]
    if broken:  # `cowgan project` writes finite values only, so the file was damaged or edited since
        raise InputError(f"projection {path} holds NaN or infinite values in its {' and '.join(broken)}: run "
                         "`cowgan project` again")
    return ProjectedLatent(tensors["ws"].float(), tensors["noise"].float(), metadata)


def describe_projection(latent: ProjectedLatent) -> str:
    """One line for the panel: which scan, how closely it was reproduced, and whether it filled the model's grid."""
    from .preprocess import MIN_COVERAGE

    info = latent.metadata
    source = info.get("source") or "the volume"
    text = f"projection of {Path(source).name if os.path.isabs(source) else source}"
    metrics = info.get("metrics") or {}
    if "correlation" in metrics and "vessel_dice" in metrics:
        text += f" (correlation {metrics['correlation']:.2f}, vessel Dice {metrics['vessel_dice']:.2f})"
    coverage = info.get("scan_coverage")
    if coverage is not None and coverage < MIN_COVERAGE:
        text += f"; the scan filled only {coverage:.0%} of the model's grid"
    beyond = beyond_samples_note(metrics)
    if beyond:
        text += f"; {beyond}"
    return text


def projection_folder(parent: Union[str, Path], scan: Union[str, Path], model_weights: Optional[str] = None,
                      source: str = "") -> Path:
    """Where the panel writes the projection of `scan` under `parent`: a folder named after the scan, the same one
    when that scan is projected again with the same model (`model_weights`, its weights_sha256), a numbered one when
    another scan of the same name (TOF.nii.gz of two patients) or another model's projection holds it, so no
    projection replaces one of another patient or another model. `source` is the scan's identity where `scan` is a
    temporary copy (see projection_source)."""
    scan, wanted = Path(scan), (projection_source(scan, source), model_weights)
    name = scan.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    parent, number = Path(parent), 1
    while True:
        folder = parent / (name if number == 1 else f"{name}-{number}")
        report = folder / OUTPUT_FILES["report"]
        if not folder.exists() or not report.is_file() or _made_by(report) == wanted:
            return folder
        number += 1


def projection_source(scan: Union[str, Path], source: str = "") -> str:
    """What a projection records as the scan it was made from, and its folder is kept for: `source` where the caller
    names one (a Slicer volume is read from a temporary copy whose path changes with every projection), else the scan
    file's resolved path."""
    return _normalised(source) if source else str(Path(scan).resolve())


def exported_scan_source(name: str, copy: Union[str, Path]) -> str:
    """The source of a volume with no file of its own (made or edited in Slicer) projected from its exported `copy`:
    its name and the copy's checksum, so the same voxels projected again reuse their folder and another patient's
    volume of the same name never does."""
    return f"{name} (exported, sha256 {file_sha256(copy)[:16]})"


def _normalised(source: str) -> str:
    """A source as compared: a file's path resolved (links, '..'), any other name as it is."""
    return str(Path(source).resolve()) if os.path.isabs(source) else source


def _made_by(report: Path) -> Tuple[Optional[str], Optional[str]]:
    """The scan and the model weights a projection.json says it was made from (None where unreadable)."""
    try:
        info = json.loads(report.read_text(encoding="utf-8"))
        source, weights = info.get("source"), info.get("model_weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None, None
    return (_normalised(source) if isinstance(source, str) and source else None), weights


def check_projection_fits(latent: ProjectedLatent, generator: Any) -> None:
    """Raise InputError unless the projection's latent and noise have the generator's shapes and it was made with
    this model (so every render from it works, not only the first check)."""
    made_with = latent.metadata.get("model")
    load_that = f"load the model it was made with ({made_with})" if made_with else "load the model it was made with"
    want = (generator.num_ws, generator.arch.latent_dim)
    if tuple(latent.ws.shape) != want:
        raise InputError(f"the projection's w+ has shape {tuple(latent.ws.shape)} but this model takes {want}: "
                         f"{load_that}, or project the volume again with this model")
    weights = latent.metadata.get("model_weights_sha256")  # older projections hold only the file's content checksum
    sha = latent.metadata.get("model_content_sha256")
    if not weights and not sha:
        raise InputError("the projection does not say which model made it (no model checksum in its metadata): "
                         "project the volume again with `cowgan project` or the panel")
    if weights and weights != weights_sha256(generator.checkpoint) or not weights and sha != generator.checkpoint.sha256:
        raise InputError(f"the projection was made with another model (its weights differ): {load_that}, "
                         "or project the volume again with this one")
    if tuple(latent.noise.shape) != noise_shape(generator.arch, 1):  # this model made it, so the file changed since
        raise InputError(f"the projection's noise has shape {tuple(latent.noise.shape)} but this model takes "
                         f"{noise_shape(generator.arch, 1)}: the file was damaged or edited; project the volume again")


def convergence_plot(path: Union[str, Path], result: ProjectionResult) -> Path:
    """Loss against step, one colour per phase, log scale."""
    matplotlib = require("matplotlib", "the projection's convergence plot", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for phase in dict.fromkeys(h["phase"] for h in result.history):
        steps = [h["step"] for h in result.history if h["phase"] == phase]
        ax.plot(steps, [h["loss"] for h in result.history if h["phase"] == phase], label=f"optimising {phase}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"correlation {result.metrics['correlation']:.3f}, vessel Dice {result.metrics['vessel_dice']:.3f}")
    ax.legend()
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(str(tmp), format="png"))
    finally:
        plt.close(fig)


def write_projection_outputs(out_dir: Union[str, Path], result: ProjectionResult, affine: np.ndarray,
                             generator: Any, config: ProjectionConfig, source: str = "",
                             coverage: Optional[float] = None, plot: bool = True,
                             template: Optional[str] = None) -> Dict[str, Path]:
    """Latent, target and reconstruction NIfTI, signed error map, MIPs, JSON report and (with `plot`) the curve;
    `coverage` is the share of the model's grid the scan filled (ScanOnGrid.coverage) and `template` the volume it was
    registered to, both kept in the metadata.

    All files are written into a hidden folder inside `out_dir` first and moved into place together at the end, so a
    failure (a full disk) leaves neither a half set nor a mix of old and new files; an earlier run's file this run does
    not write (its convergence plot, when `plot` is off) is removed, so every file in `out_dir` belongs to this run."""
    out = Path(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=".projection-", dir=out))
    try:
        written = _write_outputs(staging, result, affine, generator, config, source, coverage, plot, template)
        for path in written.values():
            os.replace(path, out / path.name)
        for key in OUTPUT_FILES.keys() - written.keys():
            (out / OUTPUT_FILES[key]).unlink(missing_ok=True)
        return {key: out / path.name for key, path in written.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_outputs(out: Path, result: ProjectionResult, affine: np.ndarray, generator: Any, config: ProjectionConfig,
                   source: str, coverage: Optional[float], plot: bool, template: Optional[str]) -> Dict[str, Path]:
    """write_projection_outputs' files, in `out`, the report last."""
    metadata = {"source": source, "model": str(generator.source), "model_content_sha256": generator.checkpoint.sha256 or None,
                "model_weights_sha256": weights_sha256(generator.checkpoint),
                "config": dataclasses.asdict(config), "precision_used": result.precision,
                "affine": np.asarray(affine).tolist(), "scan_coverage": coverage,
                "template": template}
    files = {key: out / name for key, name in OUTPUT_FILES.items()}
    paths = {"latent": save_projection(files["latent"], result, metadata),
             "target": save_volume(files["target"], result.target, affine),
             "reconstruction": save_volume(files["reconstruction"], result.reconstruction, affine),
             "error": save_volume(files["error"], result.reconstruction - result.target, affine)}
    spacing = spacing_of(affine)
    pictures = contact_sheet([mip_panel(volume, spacing, orientation_letters=True)
                              for volume in (result.target, result.reconstruction)],
                             columns=1, captions=["target", "reconstruction"])
    paths["mips"] = save_png(files["mips"], pictures)
    if plot:
        paths["plot"] = convergence_plot(files["plot"], result)
    report = dict(metadata, metrics=result.metrics, steps=len(result.history), final_loss=result.final_loss)
    paths["report"] = write_json(files["report"], report)
    return paths
