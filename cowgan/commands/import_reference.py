"""`cowgan import-reference`: volumes, sidecars, MIPs and surfaces from a model."""
from __future__ import annotations


def register(subparsers) -> None:
    subparsers.add_parser("import-reference", help="generate volumes from a model")
