"""The architecture of a 3D StyleGAN2 model: one dataclass, its derived layout, and named presets."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Tuple

from .checks import finite_number, whole_number
from .errors import InputError

NOISE_MODES = ("reference", "native")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the networks; stored in every checkpoint's metadata.

    `noise_mode` "reference" reads one uniform [0, 1) cube of side max(output_shape) per sample and
    slices its corner per block, as the published model was trained; "native" reads one standard-normal
    volume of the output shape per sample and subsamples it with a stride per block, so every block sees
    zero-mean noise spread over the whole field at 1/(side^3 / D H W) of the memory.
    """

    latent_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.1
    network_capacity: int = 8
    fmap_max: int = 1024
    output_shape: Tuple[int, int, int] = (32, 128, 128)
    noise_mode: str = "native"

    def __post_init__(self) -> None:
        shape = self.output_shape
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3:
            raise InputError(f"output_shape must have 3 sizes (D, H, W), got {shape!r}")
        object.__setattr__(self, "output_shape", tuple(whole_number(s, "every output size", 4) for s in shape))
        for size in self.output_shape:
            if size & (size - 1):
                raise InputError(f"every output size must be a power of two >= 4, got {self.output_shape}")
        if self.noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        for name in ("latent_dim", "mapping_layers", "network_capacity", "fmap_max"):
            object.__setattr__(self, name, whole_number(getattr(self, name), name, 1))
        object.__setattr__(self, "mapping_lr_mul", finite_number(self.mapping_lr_mul, "mapping_lr_mul", 0.0,
                                                                 above_low=True))

    @property
    def num_blocks(self) -> int:
        """Synthesis blocks: the largest axis doubles from 4 once per block after the first."""
        return int(math.log2(max(self.output_shape))) - 1

    @property
    def noise_side(self) -> int:
        """Side of the reference convention's cubic noise volume."""
        return max(self.output_shape)

    def generator_channels(self) -> List[int]:
        """Output channels of each synthesis block (the reference's filter rule)."""
        n = self.num_blocks
        return [min(self.fmap_max, self.network_capacity * 2 ** (i + 1)) for i in range(n)][::-1]

    def upsample_factors(self, block: int) -> Tuple[int, int, int]:
        """Per-axis factor by which synthesis block `block` enlarges its input (block 0 keeps 4^3)."""
        if block == 0:
            return (1, 1, 1)
        return tuple(2 if block <= int(math.log2(s)) - 2 else 1 for s in self.output_shape)  # type: ignore[return-value]

    def block_shape(self, block: int) -> Tuple[int, int, int]:
        """Spatial shape of synthesis block `block`'s features."""
        shape = [4, 4, 4]
        for b in range(1, block + 1):
            shape = [s * f for s, f in zip(shape, self.upsample_factors(b))]
        return tuple(shape)  # type: ignore[return-value]

    def discriminator_channels(self) -> List[int]:
        """Input and output channels of the discriminator's residual blocks (first entry: 1 image channel)."""
        n = self.num_blocks
        return [1] + [min(self.fmap_max, self.network_capacity * 4 * 2**i) for i in range(n + 1)]

    def downsample_strides(self, block: int) -> Tuple[int, int, int]:
        """Per-axis stride of discriminator block `block`; every axis ends at 2 voxels."""
        return tuple(2 if block < int(math.log2(s)) - 1 else 1 for s in self.output_shape)  # type: ignore[return-value]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form, as stored in checkpoint metadata."""
        d = dataclasses.asdict(self)
        d["output_shape"] = list(self.output_shape)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Architecture":
        """Rebuild from checkpoint metadata, ignoring keys that later versions may add."""
        if not isinstance(data, dict):
            raise InputError(f"the architecture must be a mapping of its settings, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


PRESETS: Dict[str, Architecture] = {
    # The published model: 512-d latents, channels 512..16, about 30 M generator parameters.
    "paper": Architecture(latent_dim=512, network_capacity=8, fmap_max=1024),
    # The bundled demo model: same grid, a quarter of the channels, trains on one GPU in under an hour.
    "demo": Architecture(latent_dim=256, network_capacity=4, fmap_max=256),
    # For tests and CI: seconds on a CPU.
    "tiny": Architecture(latent_dim=32, mapping_layers=2, network_capacity=1, fmap_max=16, output_shape=(16, 32, 32)),
}


def preset(name: str) -> Architecture:
    """The named architecture preset, or an InputError listing the names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def synthesis_flops(arch: Architecture) -> int:
    """Floating-point operations (2 per multiply-add) of one synthesis pass for one volume, convolutions only."""
    channels = arch.generator_channels()
    flops = 2 * channels[0] ** 2 * 27 * 64
    for i, (cin, cout) in enumerate(zip([channels[0]] + channels[:-1], channels)):
        d, h, w = arch.block_shape(i)
        voxels = d * h * w
        flops += 2 * voxels * (27 * cin * cout + 27 * cout * cout + cout)
    return flops
