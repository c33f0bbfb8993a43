"""Writing files safely (temporary name, then rename) and identifying them by sha256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Union

import numpy as np

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` then rename onto `path`, so a failure never leaves a half-written file.

    The file gets the permissions of any new file under the umask (safetensors would leave its own 0600).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _new_file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_json(path: PathLike, data: Dict[str, Any]) -> Path:
    """Write a JSON document atomically, pretty-printed; NumPy values are stored as plain numbers and lists."""
    text = json.dumps(data, indent=2, default=_json_default)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def file_sha256(path: PathLike) -> str:
    """sha256 of a file's bytes (how sidecars, manifests and reports identify models and volumes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
