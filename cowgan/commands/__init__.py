"""The subcommands; each module has `register(subparsers)` and sets `run` on its parser."""

from . import bench, evaluate, explore, export, generate, import_reference, name_directions, phantoms, prepare, project, train, turing

COMMAND_MODULES = (generate, import_reference, bench, explore, prepare, train, export, evaluate, phantoms, turing, project, name_directions)
