"""Choosing the device and the arithmetic that generation runs in."""

from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

import torch

from .errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Largest deviation from float32, as a share of the output's range, that "auto" accepts from bf16 or fp16.
REDUCED_PRECISION_TOLERANCE = 1e-2


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is an InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use cpu, cuda or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but PyTorch sees no CUDA GPU: use cpu or auto instead")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {device!r}: use cpu, cuda or auto")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has bfloat16 kernels for this CPU (AVX-512 and up; native arithmetic with AVX512-BF16 or AMX);
    without them PyTorch's bfloat16 convolutions fall back to reference code, many times slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16() -> bool:
    """True on GPUs with bfloat16 arithmetic (compute capability 8.0 and up). torch.cuda.is_bf16_supported() by
    default also says True on older GPUs, which only emulate it, slowly; older PyTorch had no such option
    and checked the compute capability."""
    if not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> Tuple[torch.dtype, bool]:
    """Compute dtype and whether to use the channels-last-3d layout for `precision` on `device`."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if cuda_has_native_bf16() else "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 is for CUDA GPUs; on the CPU use bf16 or fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return dtype, dtype != torch.float32 or device.type == "cuda"


@contextlib.contextmanager
def exact_float32(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """float32 work on a CUDA GPU in IEEE float32, not TF32 (PyTorch's default for cuDNN convolutions, with a 10-bit
    mantissa), so that fp32 means what it says; settings are restored afterwards. Nothing changes on the CPU."""
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)  # PyTorch 2.9 and later; Slicer 5.8's Python 3.9 has 2.8
    settings = [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    if not all(hasattr(owner, name) for owner, name, _ in settings):
        settings = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    before = [getattr(owner, name) for owner, name, _ in settings]
    for owner, name, exact in settings:
        setattr(owner, name, exact)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(settings, before):
            setattr(owner, name, value)


def relative_max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst voxel's deviation of `out` from the float32 `ref`, as a share of that volume's range; the largest
    over the volumes of the batch (N, ...)."""
    diff = (out.float() - ref.float()).flatten(1).abs().amax(dim=1)
    span = (ref.flatten(1).amax(dim=1) - ref.flatten(1).amin(dim=1)).float().clamp_min(1e-12)
    return float((diff / span).max())
