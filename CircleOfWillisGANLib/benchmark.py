"""Timing generation: ms per volume, throughput, achieved GFLOP/s, peak memory, reduced-precision error."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import platform
import resource
import sys
import time
from typing import List, Optional, Tuple

import torch

from .architecture import synthesis_flops
from .generator import CoWGenerator
from .precision import relative_max_error


@dataclasses.dataclass
class BenchResult:
    """One measured configuration."""

    device: str
    precision: str
    batch: int
    ms_per_volume: float
    volumes_per_s: float
    gflops_per_s: float
    peak_memory_mib: float
    max_error_vs_fp32: Optional[float]
    peak_is_the_rows: bool = True  # False: on a CPU that cannot reset it, the process's peak up to this row


def machine_description(device: torch.device) -> str:
    """A one-line description of the processor or GPU and the PyTorch build."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            name += f", {torch.get_num_threads()} threads"
        except (OSError, StopIteration):
            pass
    return f"{name}; torch {torch.__version__}"


def _reset_cpu_peak() -> bool:
    """Reset the process's resident-size high-water mark (Linux: /proc/self/clear_refs), so a row's peak is its own;
    False where the system cannot, and the peak is then the process's largest so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_peak_mib() -> float:
    """The process's resident-size high-water mark: VmHWM on Linux (reset by _reset_cpu_peak), else ru_maxrss."""
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
    """The memory a float32 synthesis of `batch` volumes takes at its peak, beyond what the process held before."""
    ws = gen.broadcast_w(gen.mapping(gen.z_from_seeds(list(range(batch)))))
    noise = gen.noise(list(range(batch)))
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
    if start is None or not _reset_cpu_peak():
        return None
    gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch)
    return max(_cpu_peak_mib() - start, 0.0)


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


def bench_generation(gen: CoWGenerator, batch: int, precision: str, repeats: int = 5, warmup: int = 2) -> BenchResult:
    """Time `repeats` synthesis passes of `batch` volumes (after `warmup`), keeping the fastest."""
    device = gen.device
    ws = gen.broadcast_w(gen.mapping(gen.z_from_seeds(list(range(batch)))))
    noise = gen.noise(list(range(batch)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row_peak = device.type == "cuda" or _reset_cpu_peak()
    for _ in range(warmup):
        gen.synthesize(ws, noise=noise, precision=precision, batch_size=batch)
    times: List[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = gen.synthesize(ws, noise=noise, precision=precision, batch_size=batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    best = min(times) / batch
    error = None
    resolved = gen.resolved_precision(precision)
    if resolved != "fp32":
        error = relative_max_error(out, gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch))
    name = precision if precision != "auto" else f"auto={resolved}"
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _cpu_peak_mib()
    return BenchResult(str(device), name, batch, best * 1000.0, 1.0 / best,
                       synthesis_flops(gen.arch) / best / 1e9, peak, error, row_peak)


def format_table(results: List[BenchResult]) -> str:
    """Fixed-width text table of results."""
    header = f"{'device':<7}{'precision':<16}{'batch':>6}{'ms/volume':>11}{'volumes/s':>11}{'GFLOP/s':>9}{'peak MiB':>10}{'max err':>10}"
    rows = [header, "-" * len(header)]
    for r in results:
        err = "-" if r.max_error_vs_fp32 is None else f"{r.max_error_vs_fp32:.1e}"
        rows.append(f"{r.device:<7}{r.precision:<16}{r.batch:>6}{r.ms_per_volume:>11.1f}{r.volumes_per_s:>11.2f}"
                    f"{r.gflops_per_s:>9.0f}{r.peak_memory_mib:>10.0f}{err:>10}")
    cpu = [r for r in results if r.device.startswith("cpu")]
    if cpu and all(r.peak_is_the_rows for r in cpu):
        rows.append("peak MiB on the CPU: the process's largest resident size during the row, the loaded model and "
                    "libraries included; on a GPU: the row's own tensor peak")
    elif cpu:
        rows.append("peak MiB on the CPU: the process's largest resident size up to that row (rows run in order, so a "
                    "row after a larger one shows that one's peak); on a GPU: the row's own tensor peak")
    return "\n".join(rows)
