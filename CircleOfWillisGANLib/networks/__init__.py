"""The 3D StyleGAN2 networks: mapping, synthesis and discriminator."""

from .discriminator import Discriminator
from .mapping import MappingNetwork
from .synthesis import SynthesisNetwork

__all__ = ["Discriminator", "MappingNetwork", "SynthesisNetwork"]
