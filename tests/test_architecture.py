"""The layering of the package: lower layers never import from higher ones."""

from __future__ import annotations

import ast
import pathlib

import pytest

import mmbilevel

PACKAGE_ROOT = pathlib.Path(mmbilevel.__file__).parent

# Layer of each top-level module or subpackage, from the bottom up.
LAYERS = {
    "registry": 0,
    "rootfind": 1,
    "legendre": 1,
    "prox": 1,
    "majorants": 1,
    "mm": 1,
    "hypergrad": 1,
    "symbolic": 1,
    "nn": 2,
    "data": 3,
    "train": 4,
    "experiments": 5,
    "cli": 5,
}


def _top_level_name(path: pathlib.Path) -> str:
    relative = path.relative_to(PACKAGE_ROOT)
    return relative.parts[0].removesuffix(".py")


def _imported_mmbilevel_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    second_parts = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "mmbilevel" and len(parts) > 1:
            second_parts.add(parts[1])
    return second_parts


SOURCE_FILES = sorted(
    path
    for path in PACKAGE_ROOT.rglob("*.py")
    if _top_level_name(path) in LAYERS
)


@pytest.mark.parametrize("path", SOURCE_FILES, ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_imports_point_down(path: pathlib.Path) -> None:
    own_layer = LAYERS[_top_level_name(path)]
    for module in _imported_mmbilevel_modules(path):
        if module not in LAYERS:
            continue
        assert LAYERS[module] <= own_layer, (
            f"{path.relative_to(PACKAGE_ROOT)} (layer {own_layer}) imports "
            f"mmbilevel.{module} (layer {LAYERS[module]}), a higher layer"
        )


def test_every_module_has_a_layer() -> None:
    unknown = {
        _top_level_name(path)
        for path in PACKAGE_ROOT.rglob("*.py")
        if path.parent == PACKAGE_ROOT or path.parent.parent == PACKAGE_ROOT
    } - set(LAYERS) - {"__init__", "__main__"}
    assert not unknown, f"modules without a layer in LAYERS: {sorted(unknown)}"
