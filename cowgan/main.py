"""Entry point: parse the subcommand, run it, and turn user errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .commands import COMMAND_MODULES

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one sub-parser per command module."""
    parser = argparse.ArgumentParser(prog="cowgan", description="3D StyleGAN2 for Circle of Willis TOF-MRA.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run `cowgan ARGS`; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        from CircleOfWillisGANLib.errors import CoWGANError
    except ImportError as exc:
        print(f"cowgan: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(args.run(args) or 0)
    except CoWGANError as exc:
        if args.debug:
            raise
        print(f"cowgan: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cowgan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
