"""Where bundled files live, in a repository checkout, an installed Slicer extension or a pip install."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import CheckpointError, MissingDependencyError

DEMO_MODEL_NAME = "demo.safetensors"


def resource_dirs() -> List[Path]:
    """Candidate Resources/ folders: $COWGAN_RESOURCES, then beside the library (checkout or extension)."""
    lib = Path(__file__).resolve().parent
    dirs = [Path(os.environ["COWGAN_RESOURCES"])] if os.environ.get("COWGAN_RESOURCES") else []
    dirs += [lib.parent / "Resources", lib / "Resources", lib.parent / "CircleOfWillisGAN" / "Resources"]
    return dirs


def demo_model_path() -> Path:
    """The bundled demo model, or a CheckpointError saying where it was looked for."""
    found, looked = _find("Models", DEMO_MODEL_NAME)
    if found is None:
        raise CheckpointError(f"the demo model {DEMO_MODEL_NAME} is not bundled (looked in {looked}): pass --model PATH")
    return found


def ui_path(name: str) -> Path:
    """A Qt Designer file of Resources/UI (the panel's, the rater's, the organiser's), or a one-line error."""
    found, looked = _find("UI", name)
    if found is None:
        raise MissingDependencyError(f"the layout {name} is missing (looked in {looked}): reinstall CircleOfWillisGAN")
    return found


def _find(subfolder: str, name: str) -> Tuple[Optional[Path], str]:
    """The first `subfolder/name` among the resource folders, and the folders looked in (for messages)."""
    for folder in resource_dirs():
        if (folder / subfolder / name).is_file():
            return folder / subfolder / name, ""
    return None, ", ".join(str(d / subfolder) for d in resource_dirs())
