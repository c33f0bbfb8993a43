"""Timing generation: ms per volume, throughput, achieved GFLOP/s, peak memory, reduced-precision error."""

from __future__ import annotations

import dataclasses
import platform
import time
from typing import List, Optional

import torch

from .architecture import synthesis_flops
from .generator import CoWGenerator
from .memory import cpu_peak_mib, reset_cpu_peak
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


def bench_generation(gen: CoWGenerator, batch: int, precision: str, repeats: int = 5, warmup: int = 2) -> BenchResult:
    """Time `repeats` synthesis passes of `batch` volumes (after `warmup`), keeping the fastest."""
    device = gen.device
    ws = gen.broadcast_w(gen.mapping(gen.z_from_seeds(list(range(batch)))))
    noise = gen.noise(list(range(batch)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row_peak = device.type == "cuda" or reset_cpu_peak()
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
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else cpu_peak_mib()
    error = None  # measured after the peak is read: the fp32 reference pass is not the row's memory
    resolved = gen.resolved_precision(precision)
    if resolved != "fp32":
        error = relative_max_error(out, gen.synthesize(ws, noise=noise, precision="fp32", batch_size=batch))
    name = precision if precision != "auto" else f"auto={resolved}"
    return BenchResult(str(device), name, batch, best * 1000.0, 1.0 / best,
                       synthesis_flops(gen.arch) / best / 1e9, peak, error, row_peak)


def significant(value: float) -> str:
    """A measured rate or count with three significant digits or more, without an exponent above 100 (0.0293, 12.3,
    38412): a fixed number of decimals shows the tiny preset's rates as 0."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_table(results: List[BenchResult]) -> str:
    """Fixed-width text table of results."""
    header = f"{'device':<7}{'precision':<16}{'batch':>6}{'ms/volume':>11}{'volumes/s':>11}{'GFLOP/s':>9}{'peak MiB':>10}{'max err':>10}"
    rows = [header, "-" * len(header)]
    for r in results:
        err = "-" if r.max_error_vs_fp32 is None else f"{r.max_error_vs_fp32:.1e}"
        rows.append(f"{r.device:<7}{r.precision:<16}{r.batch:>6}{r.ms_per_volume:>11.1f}{r.volumes_per_s:>11.2f}"
                    f"{significant(r.gflops_per_s):>9}{r.peak_memory_mib:>10.0f}{err:>10}")
    cpu = [r for r in results if r.device.startswith("cpu")]
    if cpu and all(r.peak_is_the_rows for r in cpu):
        rows.append("peak MiB on the CPU: the process's largest resident size during the row, the loaded model and "
                    "libraries included; on a GPU: the row's own tensor peak")
    elif cpu:
        rows.append("peak MiB on the CPU: the process's largest resident size up to that row (rows run in order, so a "
                    "row after a larger one shows that one's peak); on a GPU: the row's own tensor peak")
    return "\n".join(rows)
