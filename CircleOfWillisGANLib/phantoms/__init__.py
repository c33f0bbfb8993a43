"""Procedural Circle of Willis phantoms: TOF-MRA-like volumes with TopCoW labels and anatomical variants.

`generate_phantom(seed, config)` makes one subject in memory; `write_phantom_set(out, n, seed)` writes a
set (NIfTI image + label + JSON per case, CSV manifest). See docs/phantoms.md.
"""

from .phantom import DEFAULT_SHAPE, Phantom, PhantomConfig, case_rng, generate_phantom
from .variants import FORCEABLE, VariantPrevalence, Variants, load_table, parse_overrides, sample_variants

__all__ = ["DEFAULT_SHAPE", "FORCEABLE", "Phantom", "PhantomConfig", "VariantPrevalence", "Variants", "case_rng",
           "generate_phantom", "load_table", "parse_overrides", "sample_variants"]
