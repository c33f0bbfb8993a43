"""Errors a user can cause, each with a message that names the problem and the fix."""


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


def require(module_name: str, feature: str, pip_name: str = "") -> object:
    """Import an optional dependency or raise a MissingDependencyError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        package = pip_name or module_name
        raise MissingDependencyError(
            f"{feature} needs the Python package '{package}', which is not installed: "
            f"run `pip install {package}` (in 3D Slicer: the module offers to install it)"
        ) from exc
