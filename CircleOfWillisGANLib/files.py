"""Writing files safely (temporary name, then rename) and identifying them by sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]
FULL_DISK_BYTES = 16 * 2**20  # less free space than this after a short write: the disk filled up


def path_problem(path: PathLike, folder: bool = False) -> Optional[str]:
    """Why `path` is not the existing file (or folder) an input needs, as words for an error; None if it is."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if folder and not path.is_dir():
        return "is a file, not a folder"
    if not folder and path.is_dir():
        return "is a folder, not a file"
    return None


def printable_name(name: str) -> str:
    """`name` as text any console or JSON file takes: bytes of a file name that are not UTF-8 (which Python keeps as
    lone surrogates, and a strict UTF-8 console refuses to print) are shown as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_within(path: PathLike, folder: PathLike) -> bool:
    """Whether `path` is `folder` or lies inside it, after resolving links and relative parts."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


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
        raise OutputError(f"cannot write {path}: {_write_failure(exc, path.parent)}; choose a writable location with "
                          "free space") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def zip_damage(path: PathLike) -> Optional[str]:
    """What is wrong with a zip file (a PyTorch checkpoint), or None: torch.load checks no CRC-32, so a copy damaged
    in the middle would load as silently wrong tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a whole zip archive: {exc}"
    return None if damaged is None else f"its entry {damaged} fails its checksum"


def _write_failure(exc: OSError, folder: Path) -> str:
    """Why a write failed: the system's reason, or a full disk where the writer only counted short bytes (NumPy)."""
    if exc.strerror:
        return exc.strerror
    try:
        if shutil.disk_usage(folder).free < FULL_DISK_BYTES:
            return f"the disk is full ({exc})"
    except OSError:
        pass
    return str(exc)


def stage_name(prefix: str) -> str:
    """A hidden stage folder's name that records its owner (this host and process), so that a later run can tell a
    stage left by a killed process from one still being written."""
    return f"{prefix}{socket.gethostname()}@{os.getpid()}"  # no host name holds "@", so no host's stage reads as another's


def remove_abandoned_stages(folder: Path, prefix: str) -> None:
    """Delete the stages named by `stage_name(prefix)` in `folder` whose process on this host has ended: a process
    killed outright (out of memory, SIGKILL) cannot remove its own, and a dataset's stage can hold gigabytes."""
    owner = re.compile(re.escape(f"{prefix}{socket.gethostname()}@") + r"(\d+)(-|$)")
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = owner.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not process_runs(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)


def process_runs(pid: int) -> bool:
    """Whether process `pid` of this host still runs (and so may still be writing its stage)."""
    if pid == os.getpid():
        return False  # a stage of this process's own is left from an earlier, failed call
    if os.name == "nt":
        return True  # os.kill(pid, 0) sends Ctrl-C there; a stage left on Windows stays
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def staged_folder(folder: PathLike) -> Iterator[Path]:
    """Yield a hidden, empty stage folder whose contents become `folder` only if the block finishes.

    A new folder is staged beside it and renamed into place. An existing folder (a mount point cannot be replaced)
    is filled from a stage inside it, each staged entry replacing one of the same name and leaving the others. A
    failure inside the block leaves `folder` as it was.
    """
    folder = Path(folder)
    inside = folder.is_dir()
    where, prefix = (folder, ".partial-") if inside else (folder.parent, f".{folder.name}.partial-")
    remove_abandoned_stages(where, prefix)
    stage = where / stage_name(prefix)
    try:
        try:
            stage.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create {folder}: {exc.strerror or exc}; choose a writable location") from exc
        yield stage
        try:
            if inside:
                for entry in sorted(stage.iterdir()):
                    os.replace(entry, folder / entry.name)
                stage.rmdir()
            else:
                os.replace(stage, folder)
        except OSError as exc:
            raise OutputError(f"cannot put the finished output in {folder}: {exc.strerror or exc}; "
                              "choose a writable location") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def save_safetensors(path: PathLike, tensors: Dict[str, Any], metadata: Dict[str, str]) -> Path:
    """Write tensors and string metadata as one safetensors file, atomically; a failed write is an OutputError."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            reason = re.search(r"I/O error: (.*?) \(os error", str(exc))
            raise OutputError(f"cannot write {path}: {reason.group(1) if reason else exc}; "
                              "choose a writable location with free space") from None

    return atomic_write(path, write)


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
