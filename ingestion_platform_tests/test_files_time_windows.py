"""Files in time windows counted in a time zone (`batch: {every: day, timezone: …}`): each
file lands in the day its mtime falls in, there, across a DST change (Paris went from
+01:00 to +02:00 at 2026-03-29 01:00 UTC, a 23-hour day), and a file arriving late into
a landed day lands that day again, whole."""

from __future__ import annotations

import functools
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform_tests.files_helpers import keys, local_source, rows, tick
from ingestion_platform_tests.sources import materialize

_defs = functools.partial(
    local_source,
    settle="1s",  # watched for a second, however old their mtimes
    batch={"every": "day", "start": "2026-03-27", "timezone": "Europe/Paris"},
)
# file -> (its mtime, the Paris day it belongs to)
MTIMES = {
    "a.csv": (datetime(2026, 3, 27, 23, 0, tzinfo=UTC), "2026-03-28"),  # Paris 00:00 (+01:00)
    "b.csv": (datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC), "2026-03-28"),  # 23:59:59
    "c.csv": (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "2026-03-29"),  # Paris 00:00
    "d.csv": (datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC), "2026-03-29"),  # 23:59:59 (+02:00)
    "e.csv": (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "2026-03-30"),  # Paris 00:00 (+02:00)
}


def _drop(inbox: Path, name: str, at: datetime, row: int) -> None:
    (inbox / name).write_text(f"id\n{row}\n")
    os.utime(inbox / name, (at.timestamp(), at.timestamp()))


def _settled_tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """A tick that sees the new files, then one `settle` later that takes them."""
    seen = tick(defs, instance, cursor)
    assert keys(seen) == []  # settling: not taken on first sight
    time.sleep(1.1)
    return tick(defs, instance, seen.cursor)


def test_each_file_lands_in_its_paris_day_and_a_late_file_relands_its_day(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    for row, (name, (at, _day)) in enumerate(MTIMES.items(), start=1):
        _drop(inbox, name, at, row)
    defs = _defs(tmp_path, inbox)
    first = _settled_tick(defs, instance)
    assert keys(first) == ["2026-03-28", "2026-03-29", "2026-03-30"]
    for key in keys(first):
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    placed = "select _file, _batch_key from inbox.orders order by _file"
    assert rows(warehouse, placed) == [(name, day) for name, (_at, day) in MTIMES.items()]

    # Copied in late with its original mtime (`rsync -t`): its day is cut again, whole.
    _drop(inbox, "late.csv", datetime(2026, 3, 29, 12, 0, tzinfo=UTC), 6)
    second = _settled_tick(defs, instance, first.cursor)
    assert keys(second) == ["2026-03-29"]
    materialize(defs, partition_key="2026-03-29", resources=resources, instance=instance)
    assert rows(warehouse, placed) == sorted(
        [(name, day) for name, (_at, day) in MTIMES.items()] + [("late.csv", "2026-03-29")]
    )
    assert rows(warehouse, "select count(*) from inbox.orders") == [(6,)]
