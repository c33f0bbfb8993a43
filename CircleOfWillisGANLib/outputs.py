"""Output folders (checked before work, never overwritten by surprise) and one generated volume written with
everything a user needs beside it: NIfTI, JSON sidecar, MIP, surface."""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import numpy as np

from . import __version__
from .errors import InputError, OutputError
from .mip import mip_panel, save_png
from .files import write_json
from .volume_io import save_volume, spacing_of


def prepare_output_dir(path: Union[str, Path], create: bool = True) -> Path:
    """Check that `path` is (or can become) a writable folder, before any work is done; create it if `create`.

    Commands that may still fail on their inputs check first and create the folder only when they write into it,
    so a refused request leaves no empty folder behind.
    """
    if not str(path).strip():
        raise OutputError("no output folder was given: choose one")
    path = Path(path)
    if not create:
        existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise OutputError(f"cannot create output folder {path}: {existing} is a file; choose another output folder (--out)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"output folder {existing} is not writable: choose another output folder (--out)")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {exc.strerror or exc}; choose a writable location") from exc
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} is not writable: choose another output folder (--out)")
    return path


@contextlib.contextmanager
def output_folder(path: Union[str, Path]) -> Iterator[Path]:
    """prepare_output_dir(path) for a block that writes into it; if the block fails, the folders this made that are
    still empty are removed again, so a failed command leaves no empty folder behind."""
    absolute = Path(path).absolute()
    made = [p for p in (absolute, *absolute.parents) if not p.exists()]  # deepest first
    out = prepare_output_dir(path)
    try:
        yield out
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (something was written) or already gone
                break
        raise


def refuse_overwrite(folder: Union[str, Path], names: Iterable[str], overwrite: bool = False) -> None:
    """OutputError naming the clash if `folder` already holds any of `names`, unless `overwrite` was asked for."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    present = set(os.listdir(folder))
    clashes = [name for name in dict.fromkeys(names) if name in present]
    folders = [name for name in clashes if (folder / name).is_dir()]
    if folders:  # --overwrite replaces files; a folder of that name may hold anything
        raise OutputError(f"{folder / folders[0]} is a folder where this run writes a file: rename or remove it, or "
                          "choose a new --out")
    if clashes and not overwrite:
        more = f" and {len(clashes) - 1} more of this run's files already exist" if len(clashes) > 1 else " already exists"
        raise OutputError(f"{folder / clashes[0]}{more}: choose a new --out, or pass --overwrite to replace "
                          f"{'them' if len(clashes) > 1 else 'it'}")


def unused_stem(folder: Union[str, Path], stem: str, names: Callable[[str], Iterable[str]]) -> str:
    """`stem`, or `stem-2`, `stem-3`, ...: the first whose files `names(stem)` are all absent from `folder`, so an
    export from the panel never replaces an earlier one."""
    folder, number = Path(folder), 1
    while True:
        candidate = stem if number == 1 else f"{stem}-{number}"
        if not any((folder / name).exists() for name in names(candidate)):
            return candidate
        number += 1


def volume_output_names(stem: str, surface_format: Optional[str] = None) -> List[str]:
    """The files `write_volume_outputs` writes for `stem` (a surface only when its format is given)."""
    names = [f"{stem}.nii.gz", f"{stem}_mip.png", f"{stem}.json"]
    return names + ([f"{stem}_surface{surface_format}"] if surface_format else [])


def timestamp() -> str:
    """UTC time in ISO 8601, for sidecars and provenance."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_volume_outputs(out_dir: Union[str, Path], stem: str, volume: np.ndarray, affine: np.ndarray,
                         sidecar: Dict[str, Any], surface: bool = False, surface_format: str = ".vtp",
                         threshold: Optional[float] = None, smoothing_iterations: int = 15) -> Dict[str, Path]:
    """Write `stem`.nii.gz, `stem`.json, `stem`_mip.png and, with `surface`, `stem`_surface`format`.

    The picture and the surface are made before anything is written, and each file goes to a temporary name and is
    renamed; if any step fails, the files already written for this volume are removed, so there is never a part.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise OutputError(f"output folder {out} does not exist: create it first")
    if not isinstance(sidecar, dict):
        raise InputError(f"the sidecar must be a dict of what to record beside the volume, got {type(sidecar).__name__}")
    if surface:
        from .surface import SURFACE_FORMATS

        surface_format = "." + str(surface_format).lstrip(".").lower()  # "stl" as ".stl"
        if surface_format[1:] not in SURFACE_FORMATS:
            raise InputError(f"unknown surface format {surface_format!r}: use one of "
                             f"{', '.join('.' + f for f in SURFACE_FORMATS)}")
    names = volume_output_names(stem, surface_format if surface else None)
    record = dict(sidecar)
    record.setdefault("software_version", __version__)
    record.setdefault("created", timestamp())
    record["volume"] = {"file": names[0], "shape_dhw": list(volume.shape), "nifti_axes": "(H, W, D)",
                        "affine": np.asarray(affine).tolist()}
    picture = mip_panel(volume, spacing_of(affine), orientation_letters=True)
    mesh = None
    if surface:
        from .surface import vessel_surface, vessel_threshold

        level = vessel_threshold(volume) if threshold is None else threshold
        mesh = vessel_surface(volume, affine, level, smoothing_iterations=smoothing_iterations)  # checks the level
        level = float(level)
        record["surface"] = {"file": names[3], "threshold": level,
                             "threshold_method": "given" if threshold is not None else "Otsu on the brightest 10% of voxels",
                             "smoothing_iterations": smoothing_iterations, "points": mesh.GetNumberOfPoints()}
    paths: Dict[str, Path] = {}
    previous = _set_aside([out / name for name in names])
    try:
        paths["volume"] = save_volume(out / names[0], volume, affine)
        paths["mip"] = save_png(out / names[1], picture)
        if mesh is not None:
            from .surface import save_surface

            paths["surface"] = save_surface(mesh, out / names[3])
        paths["sidecar"] = write_json(out / names[2], record)
    except BaseException:
        for written in paths.values():  # a volume is written whole or not at all, and what it replaced comes back
            written.unlink(missing_ok=True)
        for path, kept in previous.items():
            kept.replace(path)
        raise
    for kept in previous.values():
        kept.unlink(missing_ok=True)
    return paths


def _set_aside(paths: List[Path]) -> Dict[Path, Path]:
    """Rename the existing files among `paths` to hidden names beside them (an --overwrite keeps them until the
    new volume is whole); returns {path: its set-aside copy}."""
    kept: Dict[Path, Path] = {}
    folder = next((path for path in paths if path.is_dir()), None)
    if folder is not None:
        raise OutputError(f"{folder} is a folder where this volume's file would be written: rename or remove it")
    try:
        for path in paths:
            if path.exists():
                path.replace(path.with_name(f".{path.name}.previous"))
                kept[path] = path.with_name(f".{path.name}.previous")
    except BaseException:
        for path, aside in kept.items():
            aside.replace(path)
        raise
    return kept
