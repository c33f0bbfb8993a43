"""Drawing a session: which volumes, how many of each kind, in what order, under which neutral ids."""

from __future__ import annotations

import json
import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import InputError, OutputError
from ..files import atomic_write, file_sha256, is_within, staged_folder, write_json
from ..preprocess import MIN_COVERAGE
from .config import CALLS, SessionConfig
from .grid import DisplayGrid, display_coverage, to_display
from .layout import (CASES_DIR, FORMAT_VERSION, JOURNAL_DIR, KEY_FILE, KEY_FORMAT, SESSION_FILE, SESSION_FORMAT,
                     case_id, case_path)
from .sources import VolumeSource

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedCase:
    """One case before it is written: its neutral id, its truth and which source volume it shows."""

    case_id: str
    truth: str
    source_index: int


@dataclass(frozen=True)
class CreatedSession:
    """What `create_session` made, for the organiser."""

    folder: Path
    key_path: Path
    n_cases: int
    n_real: int
    n_fake: int


def plan_cases(config: SessionConfig, n_real_available: int, n_fake_available: int,
               salt: str = "") -> List[PlannedCase]:
    """Draw the cases from the seed and `salt` (the generated source's fingerprint) alone: the real count, which
    volumes, and a shuffled order. Two models compared with one seed so get unrelated patterns. There must be
    enough volumes for the largest count of either kind the settings can draw, so that no seed fails where
    another succeeds."""
    config.validate()
    lo, hi = config.n_real_range()
    if hi > n_real_available:
        raise InputError(f"the session needs up to {hi} real volumes but the real folder holds {n_real_available}: "
                         "add real volumes or ask for fewer cases")
    if int(config.n_cases) - lo > n_fake_available:
        raise InputError(f"the session needs up to {int(config.n_cases) - lo} generated volumes but only "
                         f"{n_fake_available} are available: add generated volumes or seeds, or ask for fewer cases")
    rng = np.random.default_rng([int(config.seed), int(hashlib.sha256(salt.encode()).hexdigest(), 16)])
    n_real = int(rng.integers(lo, hi + 1))
    n_fake = int(config.n_cases) - n_real
    real = rng.choice(n_real_available, size=n_real, replace=False)
    fake = rng.choice(n_fake_available, size=n_fake, replace=False)
    drawn = [("real", int(i)) for i in real] + [("fake", int(i)) for i in fake]
    order = rng.permutation(len(drawn))
    return [PlannedCase(case_id(k), *drawn[int(j)]) for k, j in enumerate(order)]


def create_session(folder: Union[str, Path], real: VolumeSource, generated: VolumeSource, config: SessionConfig,
                   grid: Optional[DisplayGrid] = None, key_path: Union[str, Path, None] = None,
                   progress: Optional[Progress] = None) -> CreatedSession:
    """Write a complete session folder (built in a hidden stage, then moved into place) and its answer key."""
    config.validate()
    folder = Path(folder)
    key = check_session_outputs(folder, key_path, {name: source.description.get("folder")
                                                   for name, source in (("real", real), ("generated", generated))})
    grid = grid or generated.grid
    plan = plan_cases(config, len(real.items), len(generated.items), generated.fingerprint)
    try:
        with staged_folder(folder) as stage:
            (stage / CASES_DIR).mkdir()
            (stage / JOURNAL_DIR).mkdir()
            key_cases = _write_cases(stage, plan, real, generated, grid, progress)
            session_id = _session_id(key_cases)
            write_json(stage / SESSION_FILE, dict(_session_description(config, grid, plan), session_id=session_id))
            stamp = time.time()
            for path in [stage / SESSION_FILE] + [case_path(stage, c.case_id) for c in plan]:
                os.utime(path, (stamp, stamp))
            key_data = dict(_key_description(config, grid, plan, key_cases, real, generated), session_id=session_id,
                            session_file_sha256=file_sha256(stage / SESSION_FILE))
            write_json(stage / KEY_FILE if not key_path else key, key_data)
    except BaseException:
        if key_path and key.exists():
            key.unlink()
        raise
    n_real = sum(c.truth == "real" for c in plan)
    return CreatedSession(folder, key, len(plan), n_real, len(plan) - n_real)


def check_session_outputs(folder: Union[str, Path], key_path: Union[str, Path, None],
                          source_folders: Dict[str, Union[str, Path, None]]) -> Path:
    """Refuse a session folder or answer key that would overwrite something, mix with the source folders (named
    as the options give them: "real", "generated"; None for a model) or let raters read the key; return the key's
    path. Cheap: `TuringSession.create` calls it before reading a source or generating a volume."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"{folder} already exists and is not an empty folder: choose a new folder for the session")
    key = Path(key_path) if key_path else folder / KEY_FILE
    for name, source_folder in source_folders.items():
        for flag, path in (("--out", folder), ("--key", key)):
            if source_folder and is_within(path, source_folder):
                raise InputError(f"{flag} {path} is the --{name} folder or inside it: write the session and its key "
                                 "to their own folder outside the source folders")
    if key_path and is_within(key, folder):
        raise OutputError(f"--key {key} is inside the session folder {folder}, which the raters share: write the key "
                          "outside it (or leave --key out to put it there and move it before sharing)")
    if key_path and key.exists():
        raise OutputError(f"answer key {key} already exists: choose a new key path or remove the old key")
    if key_path and not key.parent.is_dir():
        raise OutputError(f"cannot write the answer key: folder {key.parent} does not exist")
    return key


def _write_cases(stage: Path, plan: List[PlannedCase], real: VolumeSource, generated: VolumeSource,
                 grid: DisplayGrid, progress: Optional[Progress]) -> List[Dict[str, Any]]:
    """Make every case as a draft, then write the case files in id order (itself random) in one quick run, so that
    neither file order, inode order nor file creation times (which reflect how long a volume took to make, and
    which no tool can reset) carry source information."""
    import nibabel as nib

    affine = grid.affine()
    drafts = stage / ".drafts"
    drafts.mkdir()
    out, padded = [], []
    for k, case in enumerate(plan):
        item = (real if case.truth == "real" else generated).items[case.source_index]
        volume, source_affine = item.load()
        name = item.provenance.get("path") or f"seed {item.provenance.get('seed')}"
        try:
            display = to_display(volume, source_affine, grid)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
        coverage = display_coverage(volume.shape, source_affine, grid)
        if coverage < MIN_COVERAGE:
            padded.append(f"{Path(name).name} {coverage:.0%}")
        image = nib.Nifti1Image(np.ascontiguousarray(display.transpose(1, 2, 0)), affine)
        image.header.set_xyzt_units("mm")
        image.header.set_data_dtype(np.uint8)
        draft = drafts / case_path(stage, case.case_id).name
        atomic_write(draft, lambda tmp, image=image: nib.save(image, str(tmp)))
        out.append({"id": case.case_id, "truth": case.truth, "source": item.provenance,
                    "sha256": file_sha256(draft), "grid_coverage": round(coverage, 4)})
        if progress:
            progress(k + 1, len(plan))
    for case in plan:  # copies, not renames: a new file gets a new creation time
        shutil.copyfile(drafts / case_path(stage, case.case_id).name, case_path(stage, case.case_id))
    shutil.rmtree(drafts)
    if padded:
        log.warning("%d case volume(s) fill less than %.0f%% of the display grid and are padded, which raters may "
                    "notice (%s): use volumes that cover the grid, or pass a smaller grid", len(padded),
                    100 * MIN_COVERAGE, ", ".join(padded[:3]) + (", ..." if len(padded) > 3 else ""))
    return out


def _session_id(key_cases: List[Dict[str, Any]]) -> str:
    """An id that ties journals and the key to this session: a digest of its case files, so it is the same for the
    same session made again and says nothing a rater does not already have."""
    return hashlib.sha256("".join(c["sha256"] for c in key_cases).encode()).hexdigest()[:16]


def _session_description(config: SessionConfig, grid: DisplayGrid, plan: List[PlannedCase]) -> Dict[str, Any]:
    """Rater-facing: no seed, no counts by kind, no sources; only what every case shares."""
    return {"format": SESSION_FORMAT, "version": FORMAT_VERSION, "cases": [c.case_id for c in plan],
            "display": config.display, "time_limit_s": config.time_limit_s, "allow_back": bool(config.allow_back),
            "raters": list(config.raters), "grid": grid.describe(), "order_per_session": True}


def _key_description(config: SessionConfig, grid: DisplayGrid, plan: List[PlannedCase], cases: List[Dict[str, Any]],
                     real: VolumeSource, generated: VolumeSource) -> Dict[str, Any]:
    return {"format": KEY_FORMAT, "version": FORMAT_VERSION, "seed": int(config.seed),
            "real_fraction": config.real_fraction, "n_real": sum(c.truth == "real" for c in plan),
            "n_fake": sum(c.truth == "fake" for c in plan), "sources": {"real": real.description,
                                                                         "generated": generated.description},
            "grid": grid.describe(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {"allow_back": bool(config.allow_back), "time_limit_s": config.time_limit_s}, "cases": cases}


def read_key(path: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The answer key and its case id -> truth map; only organiser-side code calls this."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"answer key {path} not found: pass --key with the key file written when the session was made")
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"answer key {path} is damaged ({exc}): restore it from the organiser's backup") from exc
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT:
        raise InputError(f"{path} is not a Turing test answer key: pass the key file written by `cowgan turing create`")
    if key.get("version") != FORMAT_VERSION:
        raise InputError(f"answer key {path} is version {key.get('version')!r}; this software reads version "
                         f"{FORMAT_VERSION}: use the CircleOfWillisGAN version that made the session")
    cases = key.get("cases")
    if (not isinstance(cases, list) or not all(isinstance(c, dict) and {"id", "truth"} <= c.keys() for c in cases)
            or not all(c["truth"] in CALLS for c in cases) or len({c["id"] for c in cases}) != len(cases)):
        raise InputError(f"answer key {path} is damaged (its case list or a truth is malformed): restore it from the "
                         "organiser's backup")
    return key, {c["id"]: c["truth"] for c in cases}
