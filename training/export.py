"""`cowgan export`: a run's EMA generator as the native inference checkpoint that load_generator reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from CircleOfWillisGANLib import __version__
from CircleOfWillisGANLib.architecture import Architecture
from CircleOfWillisGANLib.checkpoint import Checkpoint, save_checkpoint
from CircleOfWillisGANLib.directions import METADATA_KEY as DIRECTIONS_KEY, compute_directions
from CircleOfWillisGANLib.errors import CheckpointError, InputError
from CircleOfWillisGANLib.outputs import timestamp
from CircleOfWillisGANLib.files import is_within, path_problem
from CircleOfWillisGANLib.generator import CoWGenerator
from CircleOfWillisGANLib.generator_model import GeneratorModel

from .state import LATEST, PREVIOUS, find_state, load_state

log = logging.getLogger(__name__)
W_AVG_SAMPLES = 10_000


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def export_run(run_dir: Optional[Path], out: Path, name: Optional[str] = None, state_path: Optional[Path] = None,
               dtype: str = "float32") -> Checkpoint:
    """Write the EMA generator of `run_dir`'s latest (or the given) resume state to `out` and return it.

    Without `run_dir`, the run is the folder holding the `state_path`'s checkpoints/ folder.
    A damaged latest.pt falls back to previous.pt with a warning, since exporting only reads the states.
    `dtype` "float16" halves the file (the loader computes in float32 either way), e.g. to bundle a model.
    """
    if run_dir is None:
        if state_path is None:
            raise CheckpointError("export needs a run folder: pass the folder given to `cowgan train --out`")
        run_dir = run_folder_of(Path(state_path))
    run_dir = Path(run_dir)
    problem = path_problem(run_dir, folder=True)
    if problem:
        raise CheckpointError(f"run folder {run_dir} {problem}: pass the folder given to `cowgan train --out`")
    if state_path:
        check_state_in_run(Path(state_path), run_dir)
        path = Path(state_path)
        state, arch, model = read_generator(path, "pass another --state from RUN/checkpoints/")
    else:
        path = find_state(run_dir)
        if path is None:
            raise CheckpointError(f"{run_dir} holds no resume state (checkpoints/latest.pt): pass the folder given to "
                                  "`cowgan train --out`, after at least one save")
        previous = path.parent / PREVIOUS
        if path.name == LATEST and previous.is_file():
            try:
                state, arch, model = read_generator(path, f"exporting {previous} instead")
            except CheckpointError as exc:  # exporting only reads states, so the older one serves; never delete
                log.warning("%s", exc)
                path = previous
                state, arch, model = read_generator(path, "pass another --state from RUN/checkpoints/")
        else:
            state, arch, model = read_generator(path, "pass another --state from RUN/checkpoints/")
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
    stored = model.state_dict()
    weights = {k: v.to(STORAGE_DTYPES[dtype]) for k, v in stored.items()}
    overflowed = [k for k, v in weights.items()  # finite weights the storage type cannot hold: they would load as inf
                  if v.is_floating_point() and torch.isfinite(stored[k]).all() and not torch.isfinite(v).all()]
    if overflowed:
        largest = max(float(stored[k].abs().max()) for k in overflowed)
        raise CheckpointError(f"{len(overflowed)} weight tensor(s) of {path} (e.g. {overflowed[0]}, |weight| up to "
                              f"{largest:.3g}) exceed the range of {dtype}: export with --dtype float32")
    ckpt = Checkpoint(arch, weights, model.mean_w(W_AVG_SAMPLES), metadata)
    generator = CoWGenerator(ckpt, device="cpu", source=f"in resume state {path}")
    ckpt.directions, ckpt.metadata[DIRECTIONS_KEY] = compute_directions(generator)
    save_checkpoint(out, ckpt)
    return ckpt


def check_state_in_run(state_path: Path, run_dir: Path) -> None:
    """Refuse a resume state outside `run_dir`, whose export would silently record and describe another run."""
    if not is_within(state_path, run_dir):
        raise InputError(f"--state {state_path} is not inside the run folder {run_dir}: pass the state's own run folder "
                         "as RUN, or leave RUN out to export the run the state belongs to")


def run_folder_of(state_path: Path) -> Path:
    """The run folder a resume state belongs to: RUN for RUN/checkpoints/NAME.pt, else the state's own folder."""
    folder = Path(state_path).parent
    return folder.parent if folder.name == "checkpoints" else folder


def read_generator(path: Path, fix: str) -> Tuple[Dict[str, Any], Architecture, GeneratorModel]:
    """A resume state with its EMA generator built and loaded; a CheckpointError ending in `fix` if it cannot be."""
    state = load_state(path, fix=fix)
    trainer = state["trainer"]
    if not isinstance(trainer, dict) or "G_ema" not in trainer:
        raise CheckpointError(f"incomplete resume state {path}: it holds no EMA generator (trainer.G_ema); {fix}")
    try:
        arch = Architecture.from_dict(state["architecture"])
        model = GeneratorModel(arch)
        model.load_state_dict(trainer["G_ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(f"resume state {path}: its architecture does not match its generator weights "
                              f"({reason[:160]}); it was edited or damaged: {fix}") from exc
    model.eval().requires_grad_(False)
    return state, arch, model
