"""`cowgan export`: a run's EMA generator as the native inference checkpoint that load_generator reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from CircleOfWillisGANLib import __version__
from CircleOfWillisGANLib.architecture import Architecture
from CircleOfWillisGANLib.checkpoint import Checkpoint, save_checkpoint
from CircleOfWillisGANLib.directions import METADATA_KEY as DIRECTIONS_KEY, compute_directions
from CircleOfWillisGANLib.errors import CheckpointError
from CircleOfWillisGANLib.outputs import timestamp
from CircleOfWillisGANLib.files import path_problem
from CircleOfWillisGANLib.generator import CoWGenerator
from CircleOfWillisGANLib.generator_model import GeneratorModel

from .state import find_state, load_state

log = logging.getLogger(__name__)
W_AVG_SAMPLES = 10_000


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def export_run(run_dir: Path, out: Path, name: Optional[str] = None, state_path: Optional[Path] = None,
               dtype: str = "float32") -> Checkpoint:
    """Write the EMA generator of `run_dir`'s latest (or the given) resume state to `out` and return it.

    `dtype` "float16" halves the file (the loader computes in float32 either way), e.g. to bundle a model.
    """
    run_dir = Path(run_dir)
    problem = None if state_path else path_problem(run_dir, folder=True)
    if problem:
        raise CheckpointError(f"run folder {run_dir} {problem}: pass the folder given to `cowgan train --out`")
    path = Path(state_path) if state_path else find_state(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} holds no resume state (checkpoints/latest.pt): pass the folder given to "
                              "`cowgan train --out`, after at least one save")
    state = load_state(path)
    arch = Architecture.from_dict(state["architecture"])
    model = GeneratorModel(arch)
    model.load_state_dict(state["trainer"]["G_ema"])
    model.eval().requires_grad_(False)
    progress = state["progress"]
    data = dict(state["dataset"].get("manifest_data", {}))
    metadata: Dict[str, Any] = {
        "name": name or Path(out).stem,
        "data": {key: data[key] for key in ("affine", "spacing_mm", "orientation", "normalisation") if key in data},
        "provenance": {
            "source": "cowgan train", "exported": timestamp(), "software_version": __version__,
            "run": str(run_dir.resolve()), "step": progress["step"], "kimg": progress["kimg"],
            "training_seconds": round(float(progress["elapsed_s"]), 1), "device": progress["device"],
            "processes": progress["world_size"], "precision": progress["precision"],
            "dataset": {"count": state["dataset"]["count"], "fingerprint": state["dataset"]["fingerprint"]},
            "init_from": progress.get("init_from"), "config": state["config"],
            "w_avg": f"mean of w over {W_AVG_SAMPLES} z from seed 0 (EMA mapping)",
        },
    }
    metadata["provenance"]["storage_dtype"] = dtype
    weights = {k: v.to(STORAGE_DTYPES[dtype]) for k, v in model.state_dict().items()}
    ckpt = Checkpoint(arch, weights, model.mean_w(W_AVG_SAMPLES), metadata)
    ckpt.directions, ckpt.metadata[DIRECTIONS_KEY] = compute_directions(CoWGenerator(ckpt, device="cpu"))
    save_checkpoint(out, ckpt)
    return ckpt
