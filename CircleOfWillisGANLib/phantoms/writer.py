"""Writing a phantom set: NIfTI image + label + JSON per case, a CSV manifest, an optional MIP contact sheet.

Case i of a set with seed s depends only on (s, i), so the files are identical whatever the worker count.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import os
import re
import shutil
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Union

import numpy as np

from .. import __version__
from ..checks import check_workers
from ..errors import InputError, OutputError
from ..files import atomic_write, remove_abandoned_stages, stage_name, staged_folder, write_json
from ..interrupts import ctrl_c_held_from_new_processes, ignore_ctrl_c
from ..latents import check_seed
from ..topcow import COMPLETE_CIRCLE, LABEL_NAMES
from ..volume_io import save_volume
from .phantom import Phantom, PhantomConfig, generate_phantom

MANIFEST = "manifest.csv"
PREVIEW = "preview.png"
PREVIEW_CASES = 16
PARTIAL_PREFIX = ".phantoms-partial-"  # a set being written into an existing folder
MAX_PHANTOMS = 1_000_000  # as many as --seeds may list; a set this size builds its manifest in ~250 MB of memory
PREVIEW_SOFTWARE = "CircleOfWillisGAN phantoms"  # the PNG text that marks a set's preview as written by write_preview
MANIFEST_FIELDS = ("case", "index", "image", "label", "params", "anterior", "posterior", "complete",
                   "fetal_pca_left", "fetal_pca_right", "pcom_absent_left", "pcom_absent_right", "a1_absent_left",
                   "a1_absent_right", "acom_absent", "acom_duplicated", "third_a2", "circle_in_view")


CASE_FILE = re.compile(r"phantom_\d{5,}(_image|_label)?\.(nii|nii\.gz|json)")


def _is_set_manifest(path: Path) -> bool:
    """Whether `path` is a manifest that write_manifest wrote (its header), not a user's file of the same name."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith(",".join(MANIFEST_FIELDS[:5]) + ",")  # older sets lack the last columns
    except (OSError, UnicodeDecodeError):
        return False


def set_files(out: Union[str, Path]) -> List[Path]:
    """The files of a phantom set already in `out` (cases, its manifest, its preview): what a new set would mix
    with. A manifest.csv without the phantom manifest's header, or a preview.png that write_preview did not mark,
    is not counted: it is the user's."""
    folder = Path(out)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and CASE_FILE.fullmatch(p.name)]
    manifest, preview = folder / MANIFEST, folder / PREVIEW
    if manifest.is_file() and _is_set_manifest(manifest):
        files.append(manifest)
    if preview.is_file() and _is_set_preview(preview):
        files.append(preview)
    return sorted(files)


def _is_set_preview(path: Path) -> bool:
    """Whether `path` is a preview that write_preview wrote (it marks its PNG), not a user's picture."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == PREVIEW_SOFTWARE
    except (OSError, UnidentifiedImageError):
        return False


def check_no_foreign_files(out: Union[str, Path], preview: bool) -> None:
    """Raise OutputError if writing a set into `out` would replace a file of the user's that is not part of a phantom
    set (a manifest.csv of their own, or with `preview` a preview.png), naming it and the fix."""
    folder = Path(out)
    ours = set(set_files(folder))
    for name in (MANIFEST, PREVIEW) if preview else (MANIFEST,):
        path = folder / name
        if path.exists() and path not in ours:
            raise OutputError(f"{path} is not part of a phantom set and a new set would replace it: move it, or "
                              "choose another --out")


def case_name(index: int) -> str:
    """File stem of case `index`: phantom_00000, phantom_00001, ..."""
    return f"phantom_{index:05d}"


def sidecar(phantom: Phantom, seed: int, index: int, config: PhantomConfig) -> Dict[str, Any]:
    """Everything needed to understand or reproduce one case, as JSON-ready data."""
    return {
        "generator": "CircleOfWillisGAN phantoms", "version": __version__, "set_seed": int(seed),
        "index": int(index), "shape_dhw": list(config.shape), "spacing_mm": list(config.spacing_mm),
        "label_names": {str(k): v for k, v in LABEL_NAMES.items()},
        "topcow_variants": phantom.topcow_vectors, "variants": phantom.variants.as_dict(),
        "params": phantom.params, "config": config.as_dict(),
    }


def write_case(out: Path, seed: int, index: int, config: PhantomConfig, compress: bool = True) -> Dict[str, Any]:
    """Generate case `index` of set `seed` and write its three files; return its manifest row and axial MIP."""
    phantom = generate_phantom((seed, index), config)
    stem = case_name(index)
    ext = ".nii.gz" if compress else ".nii"
    image_path, label_path, json_path = out / f"{stem}_image{ext}", out / f"{stem}_label{ext}", out / f"{stem}.json"
    save_volume(image_path, phantom.image, phantom.affine, dtype=np.float32)
    save_volume(label_path, phantom.labels, phantom.affine, dtype=np.uint8)
    write_json(json_path, sidecar(phantom, seed, index, config))
    v = phantom.variants
    vectors = phantom.topcow_vectors
    row = {"case": stem, "index": index, "image": image_path.name, "label": label_path.name, "params": json_path.name,
           "anterior": "".join(str(x) for x in vectors["anterior"]),
           "posterior": "".join(str(x) for x in vectors["posterior"]),
           "complete": int(vectors == COMPLETE_CIRCLE)}
    row.update({k: int(getattr(v, k)) for k in MANIFEST_FIELDS[8:-1]})
    row["circle_in_view"] = int(phantom.params["circle_in_view"])
    return {"row": row, "mip": phantom.image.max(axis=0) if index < PREVIEW_CASES else None}


def check_count(n: int) -> None:
    """Raise InputError unless `n` is a number of phantoms a set can hold, before any folder is touched."""
    if n < 1:
        raise InputError(f"--n {n} is invalid: ask for at least one phantom")
    if n > MAX_PHANTOMS:
        raise InputError(f"--n {n} is too many: a set holds at most {MAX_PHANTOMS:,} phantoms; write a larger "
                         "collection as several sets with different --seed")


def iter_phantom_set(out: Union[str, Path], n: int, seed: int, config: Optional[PhantomConfig] = None,
                     workers: int = 1, compress: bool = True) -> Iterator[Dict[str, Any]]:
    """Write cases 0..n-1 into `out`, yielding each case's result in index order as it completes.

    Workers are given only a few cases ahead, so memory does not grow with `n` and an interrupted set stops after
    the cases in hand; workers ignore Ctrl-C, which the parent handles.
    """
    check_count(n)
    check_seed(seed)
    check_workers(workers)
    workers = min(workers, n)  # a worker beyond one per case would start only to wait
    cfg = config or PhantomConfig()
    out = Path(out)
    if not out.is_dir():
        raise OutputError(f"output folder {out} does not exist: create it or let the CLI create it")
    if workers == 1:
        for index in range(n):
            yield write_case(out, int(seed), index, cfg, compress)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=ignore_ctrl_c)
    try:
        pending: Deque[Future] = collections.deque()
        indices = iter(range(n))
        with ctrl_c_held_from_new_processes():  # the workers start with the first cases
            for index in indices:
                pending.append(pool.submit(write_case, out, int(seed), index, cfg, compress))
                if len(pending) == 2 * workers:
                    break
        while pending:
            result = pending.popleft().result()
            index = next(indices, None)
            if index is not None:
                pending.append(pool.submit(write_case, out, int(seed), index, cfg, compress))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # no worker writes on once the caller has stopped


def write_manifest(out: Union[str, Path], rows: Iterable[Dict[str, Any]]) -> Path:
    """The set's CSV manifest, one row per case; `rows` may be a generator, so no list of row dicts is held."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    return atomic_write(Path(out) / MANIFEST, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_preview(out: Union[str, Path], mips: List[np.ndarray], captions: List[str]) -> Path:
    """A contact sheet of axial MIPs (seen from below, anterior up) of the first cases."""
    from ..mip import contact_sheet, save_png

    images = [(np.clip(m.T[::-1, ::-1], 0.0, 1.0) * 255 + 0.5).astype(np.uint8) for m in mips]
    return save_png(Path(out) / PREVIEW, contact_sheet(images, columns=4, captions=captions),
                    text={"Software": PREVIEW_SOFTWARE})


def write_phantom_set(out: Union[str, Path], n: int, seed: int = 0, config: Optional[PhantomConfig] = None,
                      workers: int = 1, preview: bool = False, compress: bool = True,
                      progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write a set of `n` phantoms into `out` (which must exist); returns the manifest path."""
    check_no_foreign_files(out, preview)
    mips: List[np.ndarray] = []
    captions: List[str] = []

    def rows(results: Iterator[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        for result in results:
            if result["mip"] is not None:
                mips.append(result["mip"])
                captions.append(result["row"]["case"])
            if progress is not None:
                progress(1)
            yield result["row"]

    with contextlib.closing(iter_phantom_set(out, n, seed, config, workers, compress)) as results:
        manifest = write_manifest(out, rows(results))  # closing: the workers have stopped when this returns or fails
    if preview:
        write_preview(out, mips, captions)
    return manifest


@contextlib.contextmanager
def staged_set(out: Union[str, Path]) -> Iterator[Path]:
    """Yield a hidden, empty stage folder for a new set; only when the block finishes does its content replace the set
    already in `out` (other files stay), so a failed or interrupted run leaves `out` as it was and sets never mix.

    A new `out` (and any missing parent) is created only then; an existing one is staged inside, on its own disk.
    """
    out = Path(out)
    if out.is_dir():
        remove_abandoned_stages(out, PARTIAL_PREFIX)
        stage = Path(tempfile.mkdtemp(prefix=stage_name(PARTIAL_PREFIX) + "-", dir=out))
        try:
            yield stage
            _replace_set(out, stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return
    made = [p for p in out.absolute().parents if not p.exists()]  # nearest first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}; choose a writable location"
                          ) from exc
    try:
        with staged_folder(out) as stage:
            yield stage
    except BaseException:
        for folder in made:
            with contextlib.suppress(OSError):  # not empty: something else was written there meanwhile
                folder.rmdir()
        raise


def _replace_set(out: Path, stage: Path) -> None:
    """Move the set in `out` aside, the staged set in, then delete the old one; any failure moves everything back."""
    aside = Path(tempfile.mkdtemp(prefix=".phantoms-replaced-", dir=out))
    moves = [(path, aside / path.name) for path in set_files(out)]
    moves += [(path, out / path.name) for path in sorted(stage.iterdir())]
    try:
        for source, target in moves:
            os.replace(source, target)
    except BaseException as exc:
        for source, target in reversed(moves):
            if target.exists() and not source.exists():  # this move was made
                os.replace(target, source)
        with contextlib.suppress(OSError):  # not empty only if a move could not be undone: the old file stays there
            aside.rmdir()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot put the new set in {out} ({exc.filename2 or exc.filename}: "
                              f"{exc.strerror or exc}); the old set is kept: make room there or choose another --out"
                              ) from exc
        raise
    shutil.rmtree(aside, ignore_errors=True)
