"""The subcommands; each module has `register(subparsers)` and sets `run` on its parser."""

from . import bench, explore, generate, import_reference

COMMAND_MODULES = (generate, import_reference, bench, explore)
