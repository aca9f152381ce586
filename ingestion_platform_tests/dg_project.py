"""A dg project in a temporary folder, for the tests that run `dg check` or the platform's
check on declarations written into it."""

from __future__ import annotations

from pathlib import Path

PYPROJECT = """
[project]
name = "broken_project"
version = "0"
[tool.dg]
directory_type = "project"
[tool.dg.project]
root_module = "broken_project"
code_location_name = "broken_project"
"""
DEFINITIONS = """
from pathlib import Path
import dagster as dg

@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def write_project(folder: Path) -> Path:
    """Write the project `broken_project` into `folder` (its pyproject.toml, its package, and
    definitions that load its defs folder); return the empty defs folder."""
    package = folder / "broken_project"
    (package / "defs").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    return package / "defs"
