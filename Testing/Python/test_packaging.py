"""Packaging rules: Python versions Slicer ships, one-way dependencies, and a clear message without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLICER_IMPORTED = ["CircleOfWillisGANLib", "CircleOfWillisGAN"]
FORBIDDEN_IN_LIBRARY = {"slicer", "training", "cowgan", "qt", "ctk", "vtkSlicer", "CircleOfWillisGAN"}


def _python_files(*folders: str):
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_code_that_slicer_imports_runs_on_python_3_9():
    pytest.importorskip("vermin")
    files = [str(p) for p in _python_files(*SLICER_IMPORTED)]
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run([str(vermin), "--no-tips", "--violations", "-t=3.9-",
                             "--eval-annotations", "--backport", "typing", *files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_never_imports_slicer_training_or_the_cli():
    offenders = []
    for path in _python_files("CircleOfWillisGANLib"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_LIBRARY]
    assert offenders == []


def test_importing_the_library_without_torch_says_how_to_install_it():
    code = "import sys; sys.modules['torch'] = None; import CircleOfWillisGANLib"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert "needs PyTorch" in result.stderr and "pip install torch" in result.stderr


@pytest.mark.parametrize("missing, named", [("torch", "needs PyTorch"), ("tqdm", "the Python package 'tqdm'")])
def test_the_command_line_without_a_core_package_says_how_to_install_it_in_one_line(missing, named):
    code = f"import sys; sys.modules[{missing!r}] = None; from cowgan.main import main; sys.exit(main(['--help']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and named in lines[0] and f"pip install {missing}" in lines[0]


def test_a_missing_layout_file_is_one_project_error_naming_the_fix(monkeypatch, tmp_path):
    import CircleOfWillisGANLib.resources as resources
    from CircleOfWillisGANLib.errors import MissingDependencyError

    monkeypatch.setattr(resources, "resource_dirs", lambda: [tmp_path])
    for name in ("CircleOfWillisGAN.ui", "TuringRater.ui", "TuringOrganiser.ui"):
        with pytest.raises(MissingDependencyError, match=f"the layout {name} is missing .*: reinstall CircleOfWillisGAN"):
            resources.ui_path(name)
    monkeypatch.undo()
    assert all(resources.ui_path(name).is_file() for name in ("CircleOfWillisGAN.ui", "TuringRater.ui", "TuringOrganiser.ui"))


def test_a_missing_optional_package_is_named_by_what_pip_installs_even_when_a_package_lacks_its_own_dependency(
        tmp_path, monkeypatch):
    from CircleOfWillisGANLib.errors import MissingDependencyError, require

    for name in ("skimage", "skimage.measure"):  # the latter may be imported already by other tests
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match="^Z needs the Python package 'scikit-image', which is not "
                                                     "installed: run `pip install scikit-image`"):
        require("skimage.measure", "Z")
    (tmp_path / "wrapper_package").mkdir()  # installed, but it imports a package that is not (sklearn without scipy)
    (tmp_path / "wrapper_package" / "__init__.py").write_text("import absent_dependency_of_wrapper\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match="^Z needs the Python package 'absent_dependency_of_wrapper' "
                                                     "\\(which wrapper-pkg needs\\), which is not installed: run "
                                                     "`pip install absent_dependency_of_wrapper`"):
        require("wrapper_package", "Z", "wrapper-pkg")
