"""The prepared-dataset format: float16 volume shards that NumPy memory-maps, and a JSON manifest.

DATASET/manifest.json   format, shape, count, shard list (file, count, sha256), per-volume provenance, skipped files,
                        data geometry
DATASET/shards/NNNNN.npy  (n, D, H, W) float16 arrays in [0, 1], in manifest order
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.preprocess import is_volume_file
from CircleOfWillisGANLib.files import atomic_write, file_sha256, write_json

FORMAT = "cowgan-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
SHARD_DTYPE = np.float16
PathLike = Union[str, Path]


class ShardWriter:
    """Appends (D, H, W) volumes and writes them as shards of at most `shard_size` volumes each."""

    def __init__(self, root: PathLike, shape: Sequence[int], shard_size: int = 256) -> None:
        self.root = Path(root)
        self.shape = tuple(int(s) for s in shape)
        self.shard_size = shard_size
        self.shards: List[Dict[str, Any]] = []
        self._buffer: List[np.ndarray] = []
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def count(self) -> int:
        """Volumes written or buffered so far."""
        return sum(s["count"] for s in self.shards) + len(self._buffer)

    def add(self, volume: np.ndarray) -> None:
        """Buffer one volume; write a shard when the buffer is full."""
        if tuple(volume.shape) != self.shape:
            raise InputError(f"volume of shape {volume.shape} does not match the dataset shape {self.shape}")
        self._buffer.append(np.asarray(volume, dtype=SHARD_DTYPE))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered volumes as one shard, atomically, with its sha256 so a replaced shard is noticed."""
        if not self._buffer:
            return
        name = f"{SHARD_DIR}/{len(self.shards):05d}.npy"
        array = np.stack(self._buffer)
        path = atomic_write(self.root / name, lambda tmp: np.save(tmp, array))
        self.shards.append({"file": name, "count": int(array.shape[0]), "sha256": file_sha256(path)})
        self._buffer = []


def write_manifest(root: PathLike, manifest: Dict[str, Any]) -> Path:
    """Write the manifest last, so a dataset without one is recognisably unfinished."""
    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION)
    return write_json(Path(root) / MANIFEST, manifest)


def read_manifest(root: PathLike) -> Dict[str, Any]:
    """The manifest of a prepared dataset, or an InputError saying how to make one."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        holds_volumes = Path(root).is_dir() and any(is_volume_file(p) for p in Path(root).iterdir())
        fix = (f"`cowgan prepare --in {root} --out {Path(root).name}-prepared`, then pass that folder" if holds_volumes
               else f"`cowgan prepare --in VOLUMES --out {root}`")
        raise InputError(f"{root} is not a prepared dataset (no {MANIFEST}): run {fix}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): prepare the dataset again") from exc
    version = manifest.get("format_version", 0) if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(version, int):
        raise InputError(f"{path} is not a {FORMAT} manifest: prepare the dataset again with `cowgan prepare`")
    if version > FORMAT_VERSION:
        raise InputError(f"{path} was written by a newer CircleOfWillisGAN (manifest v{version}, this one reads "
                         f"v{FORMAT_VERSION}): upgrade CircleOfWillisGAN")
    problem = _manifest_problem(manifest)
    if problem:
        raise InputError(f"{path} {problem}: the manifest was edited or damaged; prepare the dataset again with "
                         "`cowgan prepare`")
    return manifest


def _manifest_problem(manifest: Dict[str, Any]) -> str:
    """What a manifest lacks that training reads (its shards and their shape), or "" if nothing."""
    shape = manifest.get("shape_dhw")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        return "has no valid shape_dhw (three positive whole numbers)"
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        return "lists no shards"
    for shard in shards:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str)
                and isinstance(shard.get("count"), int) and shard["count"] > 0):
            return f"has a shard entry without a file name and a positive count ({shard!r:.80})"
        if not isinstance(shard.get("sha256", ""), str):
            return f"has a shard entry whose sha256 is not text ({shard!r:.80})"
    for key in ("data", "preparation"):
        if not isinstance(manifest.get(key, {}), dict):
            return f"has a {key} entry that is not an object"
    return ""


def open_shards(root: PathLike, manifest: Dict[str, Any]) -> Tuple[List[np.ndarray], int]:
    """Memory-map every shard read-only; return the arrays and the total volume count.

    A shard whose bytes differ from the sha256 `prepare` recorded is refused: the fingerprint in a run's resume
    state covers the manifest, so only this check tells a resumed run that its volumes were swapped."""
    arrays = []
    for shard in manifest["shards"]:
        path = Path(root) / shard["file"]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read shard {path} ({exc}): prepare the dataset again") from exc
        if array.shape[0] != shard["count"] or tuple(array.shape[1:]) != tuple(manifest["shape_dhw"]):
            raise InputError(f"shard {path} has shape {array.shape}, the manifest says {shard['count']} x "
                             f"{manifest['shape_dhw']}: prepare the dataset again")
        bad = next((i for i in range(len(array)) if not np.isfinite(array[i]).all()), None)
        if bad is not None:  # prepare writes finite values only, so the file was damaged since
            raise InputError(f"shard {path} holds NaN or infinite values (its volume {bad}): prepare the dataset again")
        if "sha256" in shard and file_sha256(path) != shard["sha256"]:
            raise InputError(f"shard {path} is not the one the dataset was prepared with (its sha256 differs from "
                             "the manifest's): prepare the dataset again with `cowgan prepare`")
        arrays.append(array)
    return arrays, sum(a.shape[0] for a in arrays)
