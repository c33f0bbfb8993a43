"""`cowgan prepare`: turn a folder of NIfTI/NRRD TOF-MRA volumes into a memory-mappable training dataset.

The input folder is only read. The dataset is assembled in a hidden stage folder and moved into place at the
end, so an interrupted run leaves no half-written dataset behind.
"""

from __future__ import annotations

import concurrent.futures
import csv
import fnmatch
import functools
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from CircleOfWillisGANLib import __version__
from CircleOfWillisGANLib.errors import InputError, OutputError
from CircleOfWillisGANLib.outputs import timestamp
from CircleOfWillisGANLib.files import file_sha256, is_within, path_problem, printable_name, staged_folder
from CircleOfWillisGANLib.interrupts import ctrl_c_held_from_new_processes, ignore_ctrl_c
from CircleOfWillisGANLib.mip import contact_sheet, mip_panel, save_png
from CircleOfWillisGANLib.checks import check_workers
from CircleOfWillisGANLib.preprocess import (PrepareOptions, VolumeRejected, coverage_warning, is_volume_file,
                                             normalise, preprocess_file, read_canonical, simpleitk)
from CircleOfWillisGANLib.volume_io import default_affine

from .shards import ShardWriter, write_manifest

log = logging.getLogger(__name__)
PREVIEW_VOLUMES = 16
PHANTOM_IMAGES = "*_image.nii*"  # the pattern that picks a phantom set's images for `prepare`
MAX_TILT_DEG = 5.0  # a scan kept tilted more than this from the RAS axes (no --spacing) gets a warning
Result = Tuple[Optional[np.ndarray], Dict[str, Any]]


def tilt_degrees(affine: np.ndarray) -> float:
    """How far (degrees) a volume's axes are turned from the RAS axes, from its voxel-to-RAS affine."""
    rotation = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def prepare_dataset(input_dir: Path, out_dir: Path, options: PrepareOptions, workers: int = 1,
                    shard_size: int = 256, progress: bool = True, pattern: str = "*") -> Dict[str, Any]:
    """Preprocess every volume under `input_dir` whose name matches `pattern` into `out_dir`; return the manifest."""
    input_dir, out_dir = Path(input_dir).resolve(), Path(out_dir).resolve()
    _check_folders(input_dir, out_dir)
    check_workers(workers)
    simpleitk()  # here, not only in the workers, whose failed import would break the pool with a traceback
    # hidden files and everything in hidden folders (.snapshot, .Trash-1000, .git) are not the user's scans
    entries = sorted(p for p in input_dir.rglob("*")
                     if not any(part.startswith(".") for part in p.relative_to(input_dir).parts))
    files = [p for p in entries if p.is_file()]
    volumes = [p for p in files if is_volume_file(p) and fnmatch.fnmatch(p.name, pattern)]
    chosen = set(volumes)
    ignored = [{"source": _relative(p, input_dir), "reason": _ignored_reason(p, pattern)}
               for p in files if p not in chosen and p.suffix.lower() != ".raw"]
    links = [{"source": _relative(p, input_dir), "reason": "a broken link: its target does not exist"
              if not p.exists() else "a linked folder, which is not searched: pass its target with --in"}
             for p in entries if p.is_symlink() and not p.is_file()]
    for link in links:
        log.warning("ignored %s: %s", link["source"], link["reason"])
    ignored += links
    if not volumes:
        raise InputError(f"no NIfTI or NRRD volumes matching {pattern!r} found under {input_dir}: pass the folder "
                         "that holds them with --in (and check --pattern)")
    template_info = _check_template(options)
    with staged_folder(out_dir) as staging:
        writer = ShardWriter(staging, options.shape, shard_size)
        accepted: List[Dict[str, Any]] = []
        skipped: List[Dict[str, Any]] = []
        previews: List[np.ndarray] = []
        first_of: Dict[str, str] = {}  # file sha256 -> the source that used it
        for path, (volume, record) in zip(volumes, _run(volumes, options, workers, progress)):
            record["source"] = _relative(path, input_dir)
            if volume is not None and record["sha256"] in first_of:  # a copy or a link: one scan counted once
                volume, record["reason"] = None, f"the same file as {first_of[record['sha256']]} (a copy or a link)"
            if volume is None:
                skipped.append(record)
                log.warning("skipped %s: %s", record["source"], record["reason"])
                continue
            first_of[record["sha256"]] = record["source"]
            warning = coverage_warning(record["source"], record, options.shape,
                                       "pass whole scans, or a smaller --shape or --spacing")
            if warning:
                log.warning(warning)
            tilt = tilt_degrees(np.asarray(record["affine"]))
            if tilt > MAX_TILT_DEG and not options.template:  # --spacing resamples onto the RAS axes
                log.warning("%s is tilted %.0f degrees from the RAS axes and its volume keeps the tilt, unlike the "
                            "dataset's axis-aligned affine: pass --spacing to resample every scan onto the RAS axes, or "
                            "--template to bring every scan to the template's orientation",
                            record["source"], tilt)
            record["index"] = writer.count
            writer.add(volume)
            accepted.append(record)
            if len(previews) < PREVIEW_VOLUMES:
                previews.append(mip_panel(volume, np.linalg.norm(np.asarray(record["affine"])[:3, :3], axis=0), scale=1.0))
        writer.flush()
        if not accepted:
            reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:5])
            raise InputError(f"none of the {len(volumes)} volumes could be used ({reasons}): fix or replace them")
        save_png(staging / "preview.png", contact_sheet(previews, columns=4))
        manifest = _manifest(input_dir, options, template_info, writer, accepted, skipped, ignored, pattern)
        write_manifest(staging, manifest)
    return manifest


def prepare_phantom_set(phantom_dir: Path, out_dir: Path, shard_size: int = 256) -> Dict[str, Any]:
    """The dataset `prepare --pattern '*_image.nii.gz'` (with `--spacing S` where the phantoms are isotropic at S)
    makes from a phantom set, made without resampling, since its images already lie on their RAS grid, and so
    without SimpleITK (a GPU machine may have only nibabel): the same volumes, records and preparation."""
    from CircleOfWillisGANLib.phantoms.writer import MANIFEST as PHANTOM_MANIFEST
    from CircleOfWillisGANLib.volume_io import load_volume

    phantom_dir, out_dir = Path(phantom_dir).resolve(), Path(out_dir).resolve()
    _check_folders(phantom_dir, out_dir)
    listing = phantom_dir / PHANTOM_MANIFEST
    if not listing.is_file():
        raise InputError(f"{phantom_dir} holds no {PHANTOM_MANIFEST}, so it is not a set written by `cowgan phantoms`: "
                         "prepare other volumes with `cowgan prepare`")
    with listing.open(encoding="utf-8", newline="") as rows:
        images = [phantom_dir / row["image"] for row in csv.DictReader(rows)]
    with staged_folder(out_dir) as staging:
        writer: Optional[ShardWriter] = None
        accepted: List[Dict[str, Any]] = []
        previews: List[np.ndarray] = []
        for path in images:
            image, affine = load_volume(path)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            if tilt_degrees(affine) > 1e-3 or (np.diag(affine[:3, :3]) <= 0).any():
                raise InputError(f"{path} does not lie on RAS axes as `cowgan phantoms` writes: prepare the set with "
                                 "`cowgan prepare`")
            if writer is None:
                writer = ShardWriter(staging, image.shape, shard_size)
                isotropic = bool(np.ptp(spacing) <= 1e-6 * spacing.max())
                options = PrepareOptions(shape=tuple(image.shape),
                                         spacing=round(float(spacing[0]), 6) if isotropic else None)
            try:
                volume, bounds = normalise(image, options.normalisation, options.percentiles)
            except VolumeRejected as exc:
                raise InputError(f"{path}: {exc}: write the phantom set again") from None
            writer.add(volume)
            accepted.append({"source": _relative(path, phantom_dir), "sha256": file_sha256(path),
                             "input_size": [int(n) for n in (image.shape[1], image.shape[2], image.shape[0])],
                             "input_spacing_mm": [round(float(s), 6) for s in spacing], "normalisation": bounds,
                             "affine": np.asarray(affine).round(6).tolist(), "coverage": 1.0, "index": len(accepted)})
            if len(previews) < PREVIEW_VOLUMES:
                previews.append(mip_panel(volume, spacing, scale=1.0))
        if writer is None:
            raise InputError(f"the phantom set in {phantom_dir} lists no cases: write it again")
        writer.flush()
        save_png(staging / "preview.png", contact_sheet(previews, columns=4))
        manifest = _manifest(phantom_dir, options, None, writer, accepted, [], [], PHANTOM_IMAGES)
        write_manifest(staging, manifest)
    return manifest


def _check_folders(input_dir: Path, out_dir: Path) -> None:
    problem = path_problem(input_dir, folder=True)
    if problem:
        raise InputError(f"input folder {input_dir} {problem}: pass the folder of NIfTI/NRRD volumes with --in")
    if is_within(out_dir, input_dir):
        raise OutputError(f"--out {out_dir} is inside --in {input_dir}; the input folder is never modified: "
                          "choose an output folder outside it")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"{out_dir} already exists and is not empty: choose a new --out or remove it")
    target = out_dir if out_dir.is_dir() else out_dir.parent if out_dir.parent.exists() else Path.cwd()
    if not os.access(target, os.W_OK):
        raise OutputError(f"cannot write into {target}: choose a writable --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _check_template(options: PrepareOptions) -> Optional[Dict[str, Any]]:
    if options.template is None:
        return None
    path = Path(options.template)
    problem = path_problem(path)
    if problem:
        raise InputError(f"template {path} {problem}: pass a NIfTI/NRRD template volume with --template")
    try:
        read_canonical(path)
    except VolumeRejected as exc:
        raise InputError(f"template {path} cannot be used: {exc.with_fix('pass a grey 3D volume with --template')}"
                         ) from None
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def _run(volumes: Sequence[Path], options: PrepareOptions, workers: int, progress: bool) -> Iterator[Result]:
    from tqdm import tqdm

    bar = functools.partial(tqdm, total=len(volumes), desc="prepare", unit="vol", disable=not progress,
                            file=sys.stderr, dynamic_ncols=True)
    workers = min(workers, len(volumes))  # a worker beyond one per file would start only to wait
    if workers <= 1:
        _init_worker(1)
        yield from bar(_work(p, options) for p in volumes)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                                                initargs=(threads,)) as pool:
        with ctrl_c_held_from_new_processes():
            results = pool.map(_work, volumes, [options] * len(volumes))  # starts the workers
        yield from bar(results)


def _init_pool_worker(threads: int) -> None:
    ignore_ctrl_c()
    _init_worker(threads)


def _init_worker(threads: int) -> None:
    sitk = simpleitk()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _work(path: Path, options: PrepareOptions) -> Result:
    template = _template(options.template) if options.template else None
    return preprocess_file(path, options, template)


@functools.lru_cache(maxsize=1)
def _template(path: str) -> Any:
    return read_canonical(Path(path))


def _manifest(input_dir: Path, options: PrepareOptions, template: Optional[Dict[str, Any]], writer: ShardWriter,
              accepted: List[Dict[str, Any]], skipped: List[Dict[str, Any]], ignored: List[Dict[str, Any]],
              pattern: str) -> Dict[str, Any]:
    spacings = np.array([np.linalg.norm(np.asarray(r["affine"])[:3, :3], axis=0) for r in accepted])
    spacing = spacings.mean(axis=0)
    uniform = bool(np.allclose(spacings, spacing, rtol=0.01))
    if not uniform:
        log.warning("the volumes have different voxel spacings; pass --spacing S to resample them to one grid")
    affine = np.asarray(accepted[0]["affine"]) if template else default_affine(options.shape, spacing)
    return {
        "shape_dhw": list(options.shape),
        "count": writer.count,
        "dtype": "float16",
        "value_range": [0.0, 1.0],
        "shards": writer.shards,
        "data": {"affine": np.asarray(affine).round(6).tolist(), "spacing_mm": [round(float(s), 6) for s in spacing],
                 "spacing_uniform": uniform, "orientation": "RAS",
                 "normalisation": {"method": options.normalisation,
                                   **({"percentiles": list(options.percentiles)} if options.normalisation == "percentile" else {})}},
        "preparation": {"template": template, "spacing_mm": options.spacing, "registration": "rigid, Mattes mutual "
                        "information, 3 levels" if template else None, "crop": "centred"},
        "provenance": {"software_version": __version__, "created": timestamp(), "input_folder": str(input_dir),
                       "command": " ".join(sys.argv), "pattern": pattern},
        "volumes": accepted,
        "skipped": skipped,
        "ignored": ignored,
    }


def _ignored_reason(path: Path, pattern: str) -> str:
    if not is_volume_file(path):
        return "not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file"
    return f"does not match --pattern {pattern!r}"


def _relative(path: Path, root: Path) -> str:
    """The file's name under --in as the manifest and the console show it."""
    return printable_name(str(path.relative_to(root)))
