"""Resume states on disk: RUN/checkpoints/latest.pt, written atomically, with the previous one kept beside it.

A state holds the trainer's full state (networks, EMA, optimisers, scalers, ADA p, path-length mean, step,
rollback count, which with the seed fixes every random draw), the config, the architecture and the dataset's fingerprint. It is read with
torch.load(weights_only=True), so loading never runs code from the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from CircleOfWillisGANLib.errors import CheckpointError, OutputError
from CircleOfWillisGANLib.files import path_problem, process_runs, stage_name, zip_damage

FORMAT = "cowgan-train-state"
FORMAT_VERSION = 1
LATEST = "latest.pt"
PREVIOUS = "previous.pt"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format
REQUIRED_KEYS = ("trainer", "config", "architecture", "dataset", "progress")  # what the training loop saves


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its resume states."""
    return Path(run_dir) / "checkpoints"


def to_cpu(obj: Any) -> Any:
    """A deep copy of nested dicts/lists/tuples with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_state(run_dir: Path, state: Dict[str, Any]) -> Path:
    """Write `state` as the run's latest resume state (temporary file, then rename); keep the old one as previous."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(run_dir)
    latest = folder / LATEST
    tmp = folder / f"{stage_name(f'.{LATEST}.')}.tmp"
    payload = dict(state, format=FORMAT, format_version=FORMAT_VERSION)
    try:
        torch.save(payload, tmp)
        if latest.exists():
            os.replace(latest, folder / PREVIOUS)
        os.replace(tmp, latest)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        reason = getattr(exc, "strerror", None) or "the write failed, most likely for lack of disk space"
        raise OutputError(f"cannot write the resume state in {folder}: {reason}; free disk space "
                          "or choose another --out") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return latest


def remove_abandoned_temporaries(run_dir: Path) -> None:
    """Delete the temporary states of saves on this host whose process has ended: a run killed while saving (out of
    memory, SIGKILL) cannot remove its own, and each is as large as a resume state."""
    own_host = re.compile(re.escape(f".{LATEST}.{socket.gethostname()}@") + r"(\d+)\.tmp")
    unnamed_host = re.compile(re.escape(f".{LATEST}.") + r"(\d+)\.tmp")  # written before names had the host
    with contextlib.suppress(OSError):
        for entry in checkpoint_dir(run_dir).glob(f".{LATEST}.*.tmp"):
            match = own_host.fullmatch(entry.name) or unnamed_host.fullmatch(entry.name)
            if match and entry.is_file() and not entry.is_symlink() and not process_runs(int(match.group(1))):
                entry.unlink()


def find_state(run_dir: Path) -> Optional[Path]:
    """The newest complete resume state of a run, or None for a new run."""
    folder = checkpoint_dir(run_dir)
    for name in (LATEST, PREVIOUS):
        if (folder / name).is_file():
            return folder / name
    return None


def _resume_fix(path: Path) -> str:
    """What a run should do about a damaged or foreign resume state at `path`."""
    if path.name == LATEST and (path.parent / PREVIOUS).is_file():
        return f"delete it to resume from {PREVIOUS}, or start a new run with another --out"
    if path.name == LATEST:  # deleting the only state would start the run again from scratch, silently
        return "the run has no other resume state: start a new run with another --out (or export an earlier snapshot)"
    return "pass another resume state from RUN/checkpoints/"


def load_state(path: Path, fix: Optional[str] = None) -> Dict[str, Any]:
    """Read a resume state onto the CPU; a CheckpointError says what to do if it is damaged or foreign.

    `fix` replaces the resume advice in that message for callers that only read the state (e.g. export).
    """
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise CheckpointError(f"resume state {path} {problem}: pass a .pt file from RUN/checkpoints/")
    fix = fix or _resume_fix(path)
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError(f"{path} is not a training resume state (not a PyTorch file): {fix}")
    damage = zip_damage(path)
    if damage:
        raise CheckpointError(f"resume state {path} is truncated or corrupt ({damage}): {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(f"cannot read resume state {path} ({reason.split('. ')[0][:160]}): {fix}") from exc
    if isinstance(state, dict) and "GAN" in state:
        raise CheckpointError(f"{path} is a checkpoint of the published reference, not a resume state: convert it "
                              f"with `cowgan import-reference {path} --out MODEL.safetensors` (or fine-tune it: "
                              f"`cowgan train --init {path}`)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training resume state: pass the run folder written by `cowgan train`")
    version = state.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path} has format_version {version!r}, not a whole number: it was not written by "
                              "`cowgan train`; pass another resume state")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer CircleOfWillisGAN: upgrade to resume it")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is incomplete or was not written by `cowgan train`; "
                              f"{fix}")
    return state
