"""`cowgan bench`: volumes, sidecars, MIPs and surfaces from a model."""
from __future__ import annotations


def register(subparsers) -> None:
    subparsers.add_parser("bench", help="generate volumes from a model")
