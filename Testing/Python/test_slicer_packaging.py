"""The Slicer extension's packaging: CMake lists what the module loads, the catalog entry is valid, and every
Slicer API name the module uses exists in Slicer 5.8."""

from __future__ import annotations

import ast
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "CircleOfWillisGAN" / "CircleOfWillisGAN.py"
SLICER_FACING = [MODULE, REPO / "CircleOfWillisGANLib" / "slicer_scene.py",
                 REPO / "CircleOfWillisGANLib" / "turing" / "slicer_viewer.py"]
SHARED = REPO.parent / "shared" / "reference"
API_NAMES = SHARED / "slicer-api-names-5.8.1.txt.gz"
SCHEMA = SHARED / "slicer-extension-catalog-entry-schema-v1.0.1.json"
# Plain VTK (not Slicer) methods the module calls on vtkPolyData / transfer functions it creates itself.
VTK_METHODS = {"GetNumberOfPoints", "AddPoint", "AddRGBPoint"}
ROOT_OBJECTS = {"slicer.app": "qSlicerApplication", "slicer.mrmlScene": "vtkMRMLScene"}
BASE_CLASS = {"qSlicerApplication": "qSlicerCoreApplication"}  # where the list names an inherited method
# Names the C++ API list cannot hold, each checked in Slicer 5.8.1's source: QCoreApplication's processEvents on
# slicer.app, and DataProbe's Python objects (Modules/Scripted/DataProbe/DataProbe.py, DataProbeLib).
CHECKED_IN_SOURCE = {"qSlicerApplication.processEvents", "slicer.modules.DataProbeInstance",
                     "slicer.modules.DataProbeInstance.infoWidget",
                     "slicer.modules.DataProbeInstance.infoWidget.sliceAnnotations"}


def cmake_list(path: Path, variable: str) -> list:
    text = path.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    return match.group(1).split() if match else []


def cmake_var(name: str) -> str:
    match = re.search(rf'set\({name} "(.*?)"\)', (REPO / "CMakeLists.txt").read_text())
    return match.group(1) if match else ""


def test_every_library_file_is_listed_in_its_cmake_and_every_listed_file_exists():
    lib = REPO / "CircleOfWillisGANLib"
    scripts = set(cmake_list(lib / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS"))
    resources = set(cmake_list(lib / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES"))
    on_disk = {str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and p.name != "CMakeLists.txt" and p.suffix != ".pyc"}
    assert sorted(on_disk - scripts - resources) == [], "add these to CircleOfWillisGANLib/CMakeLists.txt"
    assert sorted(p for p in scripts | resources if not (lib / p).is_file()) == []
    assert "WITH_SUBDIR" in (lib / "CMakeLists.txt").read_text()


def _repo_imports(path: Path) -> set:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else _resolve(path, node.module, node.level)
            found.add(base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "CircleOfWillisGANLib"}


def _resolve(path: Path, module: str, level: int) -> str:
    package = path.relative_to(REPO).parent.parts
    return ".".join(package[: len(package) - level + 1] + tuple(module.split(".")))


def test_every_library_module_the_slicer_module_imports_is_packaged():
    scripts = set(cmake_list(REPO / "CircleOfWillisGANLib" / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS"))
    todo, seen = [MODULE], set()
    while todo:
        for name in _repo_imports(todo.pop()):
            parts = name.split(".")[1:]
            for candidate in ("/".join(parts) + ".py", "/".join(parts + ["__init__.py"])):
                if (REPO / "CircleOfWillisGANLib" / candidate).is_file() and candidate not in seen:
                    seen.add(candidate)
                    todo.append(REPO / "CircleOfWillisGANLib" / candidate)
    assert {"panel_controller.py", "panel_engine.py", "slicer_scene.py", "generator.py"} <= seen
    assert sorted(seen - scripts) == []


def test_the_module_cmake_lists_the_module_and_every_resource_it_loads():
    module_cmake = REPO / "CircleOfWillisGAN" / "CMakeLists.txt"
    scripts = [s.replace("${MODULE_NAME}", "CircleOfWillisGAN") for s in cmake_list(module_cmake, "MODULE_PYTHON_SCRIPTS")]
    resources = [r.replace("${MODULE_NAME}", "CircleOfWillisGAN") for r in cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES")]
    assert scripts == ["CircleOfWillisGAN.py"]
    assert all((REPO / r).is_file() for r in resources)
    loaded = re.findall(r'os\.path\.join\(RESOURCES, "(\w+)", "([\w.]+)"\)', MODULE.read_text())
    assert loaded and all(f"Resources/{folder}/{name}" in resources for folder, name in loaded)
    assert "Resources/Icons/CircleOfWillisGAN.png" in resources
    bundled = re.search(r"list\(APPEND MODULE_PYTHON_RESOURCES\s+(.*?)\)", module_cmake.read_text(), re.S).group(1).split()
    card = REPO / "Resources" / "Models" / "demo.md"
    pictures = re.findall(r"\]\(([\w.-]+\.png)\)", card.read_text())
    assert all((REPO / r).is_file() for r in bundled) and pictures
    card_files = {"Resources/Models/demo.safetensors", "Resources/Models/demo.md"}
    assert card_files | {f"Resources/Models/{p}" for p in pictures} <= set(bundled)
    assert "training" not in (REPO / "CMakeLists.txt").read_text().split("# Extension modules")[1].split("include(")[0].replace("training/ is not", "")


def test_the_top_level_cmake_has_the_extension_metadata():
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_var(name), name
    assert cmake_var("EXTENSION_DEPENDS") == "PyTorch"
    for url in [cmake_var("EXTENSION_ICONURL")] + cmake_var("EXTENSION_SCREENSHOTURLS").split():
        assert (REPO / url.split("/main/", 1)[1]).is_file(), url


def test_the_catalog_entry_is_valid_and_matches_cmake():
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip("the catalog schema is not available here")
    entry = json.loads((REPO / "CircleOfWillisGAN.json").read_text())
    jsonschema.validate(entry, json.loads(SCHEMA.read_text()))
    assert entry["build_dependencies"] == cmake_var("EXTENSION_DEPENDS").split()
    assert entry["category"] == cmake_var("EXTENSION_CATEGORY") == "Image Synthesis"
    assert entry["scm_url"].removesuffix(".git").lower() in cmake_var("EXTENSION_HOMEPAGE").lower()
    repository = entry["scm_url"].removesuffix(".git").rsplit("/", 1)[1]
    assert "slicer" in repository.lower()  # the ExtensionsIndex's check_git_repository_name


def test_the_icon_is_a_128_pixel_png_and_the_licence_is_at_the_root():
    from PIL import Image

    with Image.open(REPO / "Resources" / "Icons" / "CircleOfWillisGAN.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    assert (REPO / "LICENSE").is_file()


def test_every_slicer_api_name_the_module_uses_exists_in_slicer_5_8():
    if not API_NAMES.is_file():
        pytest.skip("the Slicer API name list is not available here")
    known = set(gzip.open(API_NAMES, "rt").read().split())
    members = {n.rsplit(".", 1)[-1] for n in known}
    missing = []
    for path in SLICER_FACING:
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            root = inner.id if isinstance(inner, ast.Name) else ""
            if root == "self" and chain[0] == "slicer":  # self.slicer.x.y in the scene helper
                chain = chain[1:]
                root = "slicer"
            if root == "slicer" and chain:
                full = ".".join(["slicer"] + chain)
                for prefix, cls in ROOT_OBJECTS.items():
                    if full.startswith(prefix + "."):
                        full = cls + full[len(prefix):]
                if full in ("slicer.app", "slicer.mrmlScene", "slicer.util", "slicer.modules") or full in CHECKED_IN_SOURCE:
                    continue
                if full.startswith(("slicer.vtkMRML", "slicer.modules.")):
                    full = full[len("slicer."):] if full.startswith("slicer.vtkMRML") else full
                spellings = [full] + [base + full[len(cls):] for cls, base in BASE_CLASS.items() if full.startswith(cls + ".")]
                if not any(_listed(name, known) for name in spellings):
                    missing.append(f"{path.name}: {full}")
            elif node.attr[:1].isupper() and not node.attr.isupper() and root not in modules | {"vtk", "np", "qt"}:
                if node.attr not in members and node.attr not in VTK_METHODS:  # an MRML or VTK method called on a node
                    missing.append(f"{path.name}: .{node.attr}")
    assert missing == []


def _listed(full: str, known: set) -> bool:
    """Whether a dotted Slicer name, or the object it starts from (e.g. a method of a listed node), is listed."""
    parts = full.split(".")
    return full in known or any(".".join(parts[: k + 1]) in known for k in range(1, len(parts)))


def test_the_module_imports_only_slicer_qt_and_the_standard_library_at_load_time():
    allowed = set(sys.stdlib_module_names) | {"qt", "slicer", "ctk", "vtk"}
    tree = ast.parse(MODULE.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {(n.module if isinstance(n, ast.ImportFrom) else n.names[0].name).split(".")[0] for n in top}
    assert names <= allowed, "the module must load (and explain what is missing) without torch or the library"


def test_the_repository_stays_far_below_100_mb():
    result = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    total = sum((REPO / f).stat().st_size for f in result.stdout.decode().split("\0") if f and (REPO / f).is_file())
    assert total < 50e6
