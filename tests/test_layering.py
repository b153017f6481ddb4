"""Imports between the folders and the stage families point one way (the README's architecture table)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"methods", "per_video"}
FAMILY_IMPORTS = {
    "motion": set(),
    "data": {"motion"},
    "idt": {"data", "motion"},
    "prior": {"idt"},
    "training": {"data", "motion", "prior"},
    "evaluation": {"data", "motion", "prior", "training"},
}
FOLDER_IMPORTS = {"models": {"models"}, "storage": {"storage"}, "tasks": {"tasks", "models", "storage"}}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("motionfit.") or name.split(".")[0] == "prefect"}


def test_folders_import_only_the_layers_below_them() -> None:
    for folder, allowed in FOLDER_IMPORTS.items():
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                layer = name.split(".")[1] if name.startswith("motionfit.") else "prefect"
                assert layer in allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_stage_families_import_only_the_families_they_build_on() -> None:
    for family, allowed in FAMILY_IMPORTS.items():
        for path in (ROOT / "tasks" / family).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[:2] != ["motionfit", "tasks"] or len(parts) < 3:
                    continue
                assert parts[2] in {family, *allowed, *SHARED}, f"{path.relative_to(ROOT)} imports {name}"
