"""Daily windows counted in a time zone (`batch: {timezone: Europe/Paris}`) across a DST
change: each row lands in the Paris day it happened in, whichever way it is read (one day,
a single-run backfill, a replay) and whether the cursor is a `timestamptz` or a zone-less
`timestamp`, which holds Paris wall-clock time.

Paris went from +01:00 to +02:00 at 2026-03-29 01:00 UTC, so that day had 23 hours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source, materialize

PARIS = ZoneInfo("Europe/Paris")
DAYS = ["2026-03-28", "2026-03-29", "2026-03-30"]
# id -> (the instant, the Paris day it belongs to)
INSTANTS = {
    1: (datetime(2026, 3, 27, 23, 0, tzinfo=UTC), "2026-03-28"),  # Paris 00:00 (+01:00)
    2: (datetime(2026, 3, 28, 22, 59, 59, 999999, tzinfo=UTC), "2026-03-28"),  # 23:59:59.999999
    3: (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "2026-03-29"),  # Paris 00:00
    4: (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "2026-03-29"),  # 03:30, after the change
    5: (datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC), "2026-03-29"),  # 23:59:59 (+02:00)
    6: (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "2026-03-30"),  # Paris 00:00 (+02:00)
    7: (datetime(2026, 3, 30, 21, 59, tzinfo=UTC), "2026-03-30"),  # 23:59
    8: (datetime(2026, 3, 30, 22, 0, tzinfo=UTC), "2026-03-31"),  # the next day: never read
}


@pytest.fixture
def paris_events(postgres_url: str) -> str:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "create table events (id int primary key, happened_at timestamptz not null, "
            "noted_at timestamp not null)"
        )
        connection.execute(
            sa.text("insert into events values (:id, :happened_at, :noted_at)"),
            [
                {
                    "id": i,
                    "happened_at": at,
                    "noted_at": at.astimezone(PARIS).replace(tzinfo=None),
                }
                for i, (at, _day) in INSTANTS.items()
            ],
        )
    engine.dispose()
    return postgres_url


def _paris_daily(tmp_path: Path, url: str, cursor: str, backend: str) -> dg.Definitions:
    attributes = {
        "connection": url,
        "cursor": cursor,
        "backend": backend,
        "tables": [{"name": "events", "primary_key": ["id"]}],
        "batch": {"every": "day", "start": "2026-03-27", "timezone": "Europe/Paris"},
    }
    return build_source(SqlDatabaseSource, tmp_path / "paris", attributes)


def _placed(warehouse: Warehouse) -> dict[int, str]:
    return dict(warehouse.query("select id, _batch_key from paris.events order by id"))


EXPECTED = {i: day for i, (_at, day) in INSTANTS.items() if day in DAYS}


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
@pytest.mark.parametrize("cursor", ["happened_at", "noted_at"])
def test_each_row_lands_in_its_paris_day_across_the_dst_change(
    paris_events: str,
    cursor: str,
    backend: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    defs = _paris_daily(tmp_path, paris_events, cursor, backend)

    for day in DAYS:
        materialize(defs, partition_key=day, resources=resources, instance=instance)
    assert _placed(warehouse) == EXPECTED

    # The three days again in one run: each row keeps its day, none is landed twice.
    range_tags = {
        "dagster/asset_partition_range_start": DAYS[0],
        "dagster/asset_partition_range_end": DAYS[-1],
    }
    materialize(defs, resources=resources, instance=instance, tags=range_tags)
    assert _placed(warehouse) == EXPECTED

    materialize(defs, partition_key="2026-03-29", resources=resources, instance=instance)
    assert _placed(warehouse) == EXPECTED
    assert warehouse.count("paris", "events") == len(EXPECTED)
