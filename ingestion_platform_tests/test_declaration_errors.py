"""`dg check defs` points at the broken `defs.yaml` line and says what to write instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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
BROKEN = """
type: ingestion_platform.components.sql_database.SqlDatabaseSource
attributes:
  connection: sqlite:///shop.sqlite
  tables:
    - name: orders
      cursor: id
  batch:
    rows: -5
"""


def test_dg_check_defs_names_the_file_line_field_and_fix(tmp_path: Path) -> None:
    package = tmp_path / "broken_project"
    (package / "defs" / "orders").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(textwrap.dedent(DEFINITIONS))
    defs_file = package / "defs" / "orders" / "defs.yaml"
    defs_file.write_text(BROKEN.lstrip())

    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    # The schema check points at the offending setting's own line, with the fix.
    assert f"{defs_file}:8" in output
    assert "'a positive number of rows, e.g. `rows: 100000`' was expected" in output
