"""Memory: the process's resident peak, what synthesising a batch takes, and whether a batch fits on its device."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from typing import Optional, Tuple

import torch

from .errors import InputError
from .generator import CoWGenerator

MEMORY_SHARE = 0.9  # of the memory available, what one batch may take (the rest: its output, copies, other work)
# what a refused batch is advised to take instead: a measurement on the CPU varies with what the process did before
# (up to 1.5x more), and the advised batch must pass when measured again
ADVISED_SHARE = 0.6


def reset_cpu_peak() -> bool:
    """Reset the process's resident-size high-water mark (Linux: /proc/self/clear_refs), so a row's peak is its own;
    False where the system cannot, and the peak is then the process's largest so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_peak_mib() -> float:
    """The process's resident-size high-water mark: VmHWM on Linux (reset by reset_cpu_peak), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (2**20 if sys.platform == "darwin" else 1024.0)


def _cpu_resident_mib() -> Optional[float]:
    """The process's resident size now (VmRSS, Linux); None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def synthesis_memory_mib(gen: CoWGenerator, probes: Tuple[int, int] = (1, 3)) -> Optional[Tuple[float, float]]:
    """(fixed, per_volume): a float32 synthesis (the precision that takes the most) of N volumes needs about
    fixed + N x per_volume MiB beyond what the process already holds, fitted to two measured batches (`probes`):
    convolution workspaces are fixed, activations grow with N. None where it cannot be measured (a CPU without
    Linux's /proc and glibc)."""
    small, large = (_synthesis_peak_mib(gen, n) for n in probes)
    if small is None or large is None:
        return None
    per_volume = max((large - small) / (probes[1] - probes[0]), 0.0)
    return max(small - probes[0] * per_volume, 0.0), per_volume


def _synthesis_peak_mib(gen: CoWGenerator, batch: int) -> Optional[float]:
    """The memory a float32 synthesis of `batch` volumes takes at its peak, beyond what the process held before. It is
    run once unmeasured first: what the first run of a batch shape keeps (kernels' caches) is not per volume."""
    ws = gen.broadcast_w(gen.mapping(gen.z_from_seeds(list(range(batch)))))
    noise = gen.noise(list(range(batch)))
    gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch)
    if gen.device.type == "cuda":
        torch.cuda.synchronize(gen.device)
        torch.cuda.reset_peak_memory_stats(gen.device)
        start = torch.cuda.memory_allocated(gen.device)
        gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch)
        torch.cuda.synchronize(gen.device)
        return (torch.cuda.max_memory_allocated(gen.device) - start) / 2**20
    if not _release_free_heap():  # else freed memory that is still resident hides what the synthesis takes
        return None
    start = _cpu_resident_mib()
    if start is None or not reset_cpu_peak():
        return None
    gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch)
    return max(cpu_peak_mib() - start, 0.0)


def _release_free_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim); False where there is no glibc."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def available_memory_mib(device: torch.device) -> Optional[float]:
    """Memory a batch can still take on `device`: the GPU's free memory plus what PyTorch holds unused, or the
    system's MemAvailable (Linux); None where unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) / 2**20
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024.0
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def check_batch_fits(gen: CoWGenerator, batch: int, option: str = "batch size") -> None:
    """An InputError naming `option` if synthesising `batch` volumes together would not fit in the device's memory
    (measured on small batches first): on a CPU the system would kill the process without a word, on a GPU it would
    stop with an out-of-memory error."""
    available = available_memory_mib(gen.device) if batch > 1 else None
    measured = synthesis_memory_mib(gen) if available is not None else None
    if measured is None:
        return
    fixed, per_volume = measured
    needed = fixed + batch * per_volume
    if needed > MEMORY_SHARE * available:
        room = ADVISED_SHARE * available - fixed
        fits = max(int(room // per_volume) if per_volume else 1, 1)  # a batch of 1 is never refused
        raise InputError(f"{option} {batch} needs about {needed / 1024:.1f} GiB on {gen.device} ({per_volume:.0f} MiB "
                         f"per volume and {fixed:.0f} MiB of workspace in float32, measured) but "
                         f"{available / 1024:.1f} GiB is available: use {option} {fits} or less")
