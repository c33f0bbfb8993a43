"""Errors a user can cause, each with a message that names the problem and the fix."""

import sys
from typing import Callable


class CoWGANError(Exception):
    """Base class: the CLI prints these as one line and exits with code 2."""


class MissingDependencyError(CoWGANError, ImportError):
    """An optional package needed for the requested feature is not installed."""


class CheckpointError(CoWGANError):
    """A model file is missing, truncated, corrupt, tampered with or of a foreign format."""


class InputError(CoWGANError, ValueError):
    """An argument or input volume is out of range, of the wrong shape or not finite."""


class OutputError(CoWGANError):
    """An output location cannot be written."""


# the pip names of packages whose import names differ
PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow", "nrrd": "pynrrd", "yaml": "pyyaml"}


def pip_name_of(module_name: str) -> str:
    """The package pip installs for an import name (its top level): scikit-image for skimage.measure."""
    top = module_name.split(".")[0]
    return PIP_NAMES.get(top, top)


def require(module_name: str, feature: str, pip_name: str = "") -> object:
    """Import an optional dependency or raise a MissingDependencyError that says how to install it; where the
    package is there but one of its own dependencies is not (scikit-learn without scipy), that one is named."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        package, needed_by = pip_name or pip_name_of(module_name), ""
        missing = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else module_name
        if missing.split(".")[0] != module_name.split(".")[0]:  # the package is there, one it imports is not
            package, needed_by = pip_name_of(missing), f" (which {package} needs)"
        raise MissingDependencyError(
            f"{feature} needs the Python package '{package}'{needed_by}, which is not installed: "
            f"run `pip install {package}` (in 3D Slicer: the module offers to install it)"
        ) from exc


def script_exit_code(main: Callable[[], int], prog: str) -> int:
    """Run a script's `main` as `cowgan` runs a command: its exit code, or 2 after one line on stderr for an error
    the user can fix (a CoWGANError), so benchmark and training scripts never answer bad input with a traceback."""
    try:
        return main()
    except CoWGANError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
