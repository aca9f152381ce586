"""A test-only code location: a SQLite table batched every minute, its schedule running.

The demo's schedules fire at midnight, too rarely for a test to watch the daemon tick.
`test_daemon_end_to_end.py` loads this module next to the demo's location through a workspace
file of its own. Unlike the project's locations it reads its folder and first window from the
environment while loading: both are only known once the test has made them, and a start near
now keeps the minute partitions few.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ingestion_platform.definitions import platform_definitions
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source

SOURCE = "minute_shop"
FOLDER_ENV = "E2E_MINUTE_FOLDER"
START_ENV = "E2E_MINUTE_START"
# The table's database; read when a run needs it, as a user's source would.
DATABASE_ENV = "E2E_MINUTE_DB_URL"


@dg.definitions
def defs() -> dg.Definitions:
    attributes = {
        "connection": {"env": DATABASE_ENV},
        "tables": [{"name": "ticks", "primary_key": ["id"]}],
        "cursor": "updated_at",
        "batch": {"cron": "* * * * *", "start": os.environ[START_ENV]},
        "automation": "running",
    }
    folder = Path(os.environ[FOLDER_ENV]) / SOURCE
    return platform_definitions(build_source(SqlDatabaseSource, folder, attributes))
