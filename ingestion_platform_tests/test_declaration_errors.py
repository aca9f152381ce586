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


def _run_check(project: Path) -> subprocess.CompletedProcess[str]:
    """`python -m ingestion_platform.check` run from the project's folder, as users run it."""
    return subprocess.run(
        [sys.executable, "-m", "ingestion_platform.check"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_check_command_reports_every_mistake_of_every_declaration(tmp_path: Path) -> None:
    # `dg check yaml` checked one declaration per component type: six of these passed it.
    project = _project_with(tmp_path, DECLARATIONS)
    api = project / "broken_project" / "defs" / "h_api"
    api.mkdir()
    api_yaml = (Path(__file__).parent / "music_paginator_typo.yaml").read_text()
    (api / "defs.yaml").write_text(api_yaml)

    completed = _run_check(project)

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


# Numbers no source can work with, each in a declaration otherwise valid. Before, all of these
# loaded: `read_threads: 0` read with one thread, a negative `sensor_interval_seconds` went to
# Dagster as is, and an MQTT `drain_seconds: -1` never drained, leaving the broker to drop
# what its session queue could not hold.
NUMBERS = {
    "k_kinesis": (
        "ingestion_platform.sources.kinesis.component.KinesisStreamSource",
        "  stream: clicks\n  batch:\n    records: 10\n  read_threads: 0\n  grace_seconds: -1\n",
    ),
    "l_mqtt": (
        "ingestion_platform.sources.mqtt.component.MqttSource",
        "  topics: [fleet/+/temp]\n  batch:\n    records: 10\n  port: 70000\n  drain_seconds: 0\n",
    ),
    "m_rabbitmq": (
        "ingestion_platform.sources.rabbitmq.component.RabbitMqSource",
        "  queue: readings\n  batch:\n    records: 10\n  sensor_interval_seconds: -30\n"
        "  prefetch: 0\n",
    ),
    "n_sql": (
        SQL,
        "  connection: sqlite:///shop.sqlite\n" + TABLE + "  batch:\n    rows: 10\n"
        "  chunk_size: 0\n",
    ),
}


def test_numbers_a_source_cannot_work_with_are_refused_at_their_lines(tmp_path: Path) -> None:
    defs = write_project(tmp_path)
    for name, (component, attributes) in NUMBERS.items():
        (defs / name).mkdir()
        (defs / name / "defs.yaml").write_text(f"type: {component}\nattributes:\n{attributes}")

    completed = _run_check(tmp_path)

    shown = "broken_project/defs"
    assert completed.stdout.splitlines() == [
        f"{shown}/k_kinesis/defs.yaml:6: read_threads: 0 is not allowed. Fix: write a number "
        "above 0, e.g. the default 8.",
        f"{shown}/k_kinesis/defs.yaml:7: grace_seconds: -1 is not allowed. Fix: write a number "
        "of at least 0, e.g. the default 10.",
        f"{shown}/l_mqtt/defs.yaml:6: port: 70000 is not allowed. Fix: write a number of at "
        "most 65535, e.g. the default 1883.",
        f"{shown}/l_mqtt/defs.yaml:7: drain_seconds: 0 is not allowed. Fix: write a number "
        "above 0, e.g. the default 10.",
        f"{shown}/m_rabbitmq/defs.yaml:6: sensor_interval_seconds: -30 is not allowed. Fix: "
        "write a number above 0, e.g. the default 30.",
        f"{shown}/m_rabbitmq/defs.yaml:7: prefetch: 0 is not allowed. Fix: write a number "
        "above 0, e.g. the default 5000.",
        f"{shown}/n_sql/defs.yaml:9: chunk_size: 0 is not allowed. Fix: write a number above "
        "0, e.g. the default 100000.",
        "7 mistake(s) in 4 declaration file(s).",
    ]
    assert completed.returncode == 1
