"""`cowgan generate`: volumes, sidecars, MIPs and surfaces from a model."""
from __future__ import annotations


def register(subparsers) -> None:
    subparsers.add_parser("generate", help="generate volumes from a model")
