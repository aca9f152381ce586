"""`dg check defs` points at the broken `defs.yaml` line and says what to write instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ingestion_platform_tests.dg_project import write_project

BROKEN = """
type: ingestion_platform.sources.sql.component.SqlDatabaseSource
attributes:
  connection: sqlite:///shop.sqlite
  tables:
    - name: orders
      cursor: id
  batch:
    rows: -5
"""


def test_dg_check_defs_names_the_file_line_field_and_fix(tmp_path: Path) -> None:
    defs = write_project(tmp_path)
    (defs / "orders").mkdir()
    defs_file = defs / "orders" / "defs.yaml"
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


SQL = "ingestion_platform.sources.sql.component.SqlDatabaseSource"
SQL_HEAD = f"type: {SQL}\nattributes:\n  connection: sqlite:///shop.sqlite\n"
TABLE = "  tables:\n    - name: orders\n      cursor: id\n"
DECLARATIONS = {
    "a_valid": TABLE + "  batch:\n    rows: 100\n",
    "b_every_typo": TABLE + '  batch:\n    every: dya\n    start: "2026-01-01"\n',
    "c_negative": TABLE + "  batch:\n    rows: -5\n",
    "d_two_boundaries": TABLE + '  batch:\n    rows: 10\n    every: day\n    start: "2026-01-01"\n',
    "e_setting_typo": TABLE + "  batch:\n    rows: 10\n  chunk_sise: 5\n",
    "f_no_cursor": "  tables:\n    - name: orders\n  batch:\n    rows: 10\n",
    "g_also_valid": TABLE + '  batch:\n    every: day\n    start: "2026-01-01"\n',
    # `5` meant as 5 % would never warn, and `soon` failed with no file or field.
    "i_warn_share": TABLE + "  batch:\n    rows: 10\n  health:\n    quarantine_warn_share: 5\n",
    "j_lag_interval": TABLE + "  batch:\n    rows: 10\n  health:\n    lag_interval: soon\n",
}


def _project_with(tmp_path: Path, declarations: dict[str, str]) -> Path:
    defs = write_project(tmp_path)
    for name, attributes in declarations.items():
        (defs / name).mkdir()
        (defs / name / "defs.yaml").write_text(SQL_HEAD + attributes)
    return tmp_path


def test_the_check_command_reports_every_mistake_of_every_declaration(tmp_path: Path) -> None:
    # `dg check yaml` checked one declaration per component type: six of these passed it.
    project = _project_with(tmp_path, DECLARATIONS)
    api = project / "broken_project" / "defs" / "h_api"
    api.mkdir()
    api_yaml = (Path(__file__).parent / "music_paginator_typo.yaml").read_text()
    (api / "defs.yaml").write_text(api_yaml)

    completed = subprocess.run(
        [sys.executable, "-m", "ingestion_platform.check"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    defs = "broken_project/defs"
    assert completed.stdout.splitlines() == [
        f"{defs}/b_every_typo/defs.yaml:8: batch.every: 'dya' is not allowed. Fix: write one "
        "of minute, hour, day, week or month, e.g. `every: day`; for other periods use "
        "`cron: '0 0 */14 * *'`.",
        f"{defs}/c_negative/defs.yaml:8: batch.rows: -5 is not allowed. Fix: write a positive "
        "number of rows, e.g. `rows: 100000`.",
        f"{defs}/d_two_boundaries/defs.yaml:7: batch: set exactly one boundary, found "
        "['every', 'rows']; use one of `every: hour|day|week|month|minute`, "
        "`cron: '*/5 * * * *'`, `rows: N`, `records: N`, `bytes: 256MB` or `files: N`",
        f"{defs}/e_setting_typo/defs.yaml:9: chunk_sise: unknown setting 'chunk_sise'. Fix: "
        "remove it, or did you mean 'chunk_size'?",
        f"{defs}/f_no_cursor/defs.yaml:5: tables[0].cursor: table 'orders' has no cursor "
        "column, so its batches cannot be sliced. Fix: set `cursor:` on the table (or for the "
        "whole source) to a column that grows with new rows, e.g. updated_at or id.",
        f"{defs}/h_api/defs.yaml:12: resources[0].endpoint.paginator.type: unknown paginator "
        "'json_lnk'; dlt knows auto, cursor, header_cursor, header_link, json_link, offset, "
        "page_number, single_page. Fix: write e.g. `type: json_link`.",
        f"{defs}/i_warn_share/defs.yaml:10: health.quarantine_warn_share: 5 is not a share. "
        "Fix: write the share of the rows read, from 0 to 1, e.g. 0.05 for 5 %.",
        f"{defs}/j_lag_interval/defs.yaml:10: health.lag_interval: 'soon' is not a positive "
        "duration. Fix: write e.g. 90s, 15m or 1h.",
        "8 mistake(s) in 10 declaration file(s).",
    ]
    assert completed.returncode == 1
    assert completed.stderr == ""
