"""Shared fixtures: the golden reference files, small generators, and Qt/rendering settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "Testing" / "data"
GOLDEN = DATA / "claim-golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The reference checkpoint, inputs and outputs copied from ../shared/reference/claim-golden."""
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_generator():
    """A random-weight generator of the tiny preset on the CPU (16 x 32 x 32 volumes)."""
    from CircleOfWillisGANLib.generator import build_generator

    return build_generator("tiny", seed=0, device="cpu")
