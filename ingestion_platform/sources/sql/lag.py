"""Lag of a SQL table: rows at the source that no partition holds yet, and the oldest's cursor.

Measured by querying the source and comparing with the partitions Dagster holds, apart
from the code that cuts (size_sensor, measure_pending) or schedules them:
- a size batch: rows past the newest cut, i.e. whose cursor is above the largest upper
  bound of the dynamic partition keys (`lo..hi`);
- a time batch: rows in closed windows that no materialized partition holds (from the
  table's first landed window on, as core/window_lag.py counts windows);
- either: rows that reached a slice after it landed. A transaction that commits after the
  window closed (or a read replica behind its primary) adds rows to a slice already landed,
  and no later run reads them: the newest RECHECKED slices that landed are counted again at
  the source and compared with the rows their latest materialisation landed.
Each query has a time limit; an unreachable database raises SourceFailure naming the source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from ingestion_platform.core.batching import CursorSlice
from ingestion_platform.core.database_urls import engine_url
from ingestion_platform.core.declaration import Setting, SourceContext, SourceFailure
from ingestion_platform.core.lag import LagMeasure, SourceLag
from ingestion_platform.core.window_lag import MAX_WINDOWS, NEVER_LANDED_WINDOWS
from ingestion_platform.sources.sql.connectors.sql_database import (
    CursorColumn,
    MissingInSource,
    SourceDatabaseError,
    inspect_table,
    safe_url,
    utc_sessions,
)

TIMEOUT_SECONDS = 20
# How many of the newest landed slices are counted again for rows that arrived after them.
RECHECKED = 3


def sql_lag_measure(
    *,
    source: SourceContext,
    connection: Setting,
    table: str,
    db_schema: str | None,
    cursor: list[str],
    asset_key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> LagMeasure:
    """The lag measure of one table (a closure over its settings, run by the lag sensor)."""

    def measure(instance: dg.DagsterInstance) -> SourceLag:
        url = source.resolve(connection, "connection")
        engine = _engine(url, timeout_seconds)
        try:
            reflected, column = inspect_table(engine, table, db_schema, cursor)
            assert column is not None
            with engine.connect() as conn:
                if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
                    ranges = _unlanded_ranges(instance, asset_key, partitions_def)
                    lag = _rows_in(conn, reflected, column, ranges)
                else:
                    newest = _newest_cut(instance, partitions_def)
                    pending = [(newest, None)]
                    lag = _rows_in(conn, reflected, column, pending, lower_inclusive=False)
                slices = _newest_landed(instance, asset_key, partitions_def)
                return _with_late_rows(lag, conn, reflected, column, slices, instance, asset_key)
        except (SourceDatabaseError, MissingInSource, sa.exc.DBAPIError) as error:
            raise SourceFailure(
                f"source {source.name!r} ({source.defs_file}): cannot measure the lag of table "
                f"{table!r} at {safe_url(url)}: {_first_line(error)}"
            ) from None
        finally:
            engine.dispose()

    return measure


def _engine(url: str, timeout: int) -> sa.Engine:
    """An engine whose connects and statements give up after `timeout` seconds."""
    backend = sa.make_url(url).get_backend_name()
    args: dict[str, Any] = {}
    if backend == "postgresql":
        args = {"connect_timeout": timeout, "options": f"-c statement_timeout={timeout * 1000}"}
    elif backend in ("mysql", "mariadb"):
        args = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
    elif backend == "sqlite":
        args = {"timeout": timeout}
    return utc_sessions(
        sa.create_engine(engine_url(url), connect_args=args, poolclass=sa.pool.NullPool)
    )


def _newest_cut(instance: dg.DagsterInstance, partitions_def: dg.PartitionsDefinition) -> Any:
    """The upper bound of the newest cut slice, read from the partition keys themselves."""
    assert isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name
    highs = [
        CursorSlice.from_key(key).hi for key in instance.get_dynamic_partitions(partitions_def.name)
    ]
    return max(highs, default=None)


Range = tuple[Any, Any]


def _unlanded_ranges(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    windows: dg.TimeWindowPartitionsDefinition,
) -> list[Range]:
    """Closed windows no materialized partition holds, merged into [start, end) ranges."""
    landed = instance.get_materialized_partitions(asset_key)
    starts = [windows.time_window_for_partition_key(key).start for key in landed]
    first_landed = min(starts, default=None)
    ranges: list[Range] = []
    window = windows.get_prev_partition_window(datetime.now(UTC))
    for seen in range(MAX_WINDOWS):
        if window is None or (first_landed is not None and window.start < first_landed):
            break
        if first_landed is None and seen >= NEVER_LANDED_WINDOWS:
            break
        key = windows.get_partition_key_for_timestamp(window.start.timestamp())
        if key not in landed:
            if ranges and ranges[-1][0] == window.end:
                ranges[-1] = (window.start, ranges[-1][1])
            else:
                ranges.append((window.start, window.end))
        window = windows.get_prev_partition_window(window.start)
    return ranges


@dataclass(frozen=True)
class _Landed:
    """A landed slice: its key and cursor range (time: [lower, upper); size: (lower, upper])."""

    key: str
    lower: Any
    upper: Any
    is_time: bool


def _newest_landed(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition
) -> list[_Landed]:
    """The RECHECKED newest slices that have landed."""
    landed = instance.get_materialized_partitions(asset_key)
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        windows = [(partitions_def.time_window_for_partition_key(key), key) for key in landed]
        windows.sort(key=lambda found: found[0].start, reverse=True)
        return [_Landed(key, w.start, w.end, True) for w, key in windows[:RECHECKED]]
    cuts = [(CursorSlice.from_key(key), key) for key in landed]
    cuts.sort(key=lambda found: found[0].hi, reverse=True)
    return [_Landed(key, cut.lo, cut.hi, False) for cut, key in cuts[:RECHECKED]]


def _with_late_rows(
    lag: SourceLag,
    conn: sa.Connection,
    table: sa.Table,
    cursor: CursorColumn,
    slices: list[_Landed],
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
) -> SourceLag:
    """`lag` plus the rows each of `slices` holds at the source beyond what it landed."""
    late: dict[str, int] = {}
    since = lag.oldest_waiting_at
    for landed in slices:
        recorded = _landed_rows(instance, asset_key, landed.key)
        if recorded is None:
            continue
        count, _ = _count(conn, table, cursor, landed.lower, landed.upper, time=landed.is_time)
        if count > recorded:
            late[landed.key] = count - recorded
            # They arrived after the slice closed: for a window, at its end at the earliest.
            closed = landed.upper if landed.is_time else None
            if closed is not None and (since is None or closed < since):
                since = closed
    if not late:
        return lag
    keys = ", ".join(sorted(late))
    return replace(
        lag,
        waiting=lag.waiting + sum(late.values()),
        oldest_waiting_at=since,
        detail={**lag.detail, "late_rows": sum(late.values()), "late_partitions": keys},
        stranded=sum(late.values()),
        note=(
            f"{sum(late.values())} of them reached partition(s) {keys} after they landed "
            "(a transaction that committed late, or a replica behind). Fix: materialise "
            f"{keys} again"
        ),
    )


def _landed_rows(instance: dg.DagsterInstance, asset_key: dg.AssetKey, key: str) -> int | None:
    """The rows the latest materialisation of partition `key` landed."""
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
    ).records
    materialization = found[0].asset_materialization if found else None
    value = materialization.metadata.get("dagster/row_count") if materialization else None
    return int(value.value) if value is not None else None  # type: ignore[arg-type]


def _count(
    conn: sa.Connection,
    table: sa.Table,
    cursor: CursorColumn,
    lower: Any,
    upper: Any,
    *,
    time: bool,
) -> tuple[int, Any]:
    """Rows with a cursor in the slice, and the smallest: a window is [lower, upper), a cut
    (lower, upper]; an open end is None."""
    column = cursor.expression(table)
    query = sa.select(sa.func.count(), sa.func.min(column)).where(column.is_not(None))
    if lower is not None:
        bound = cursor.bound(lower)
        query = query.where(column >= bound if time else column > bound)
    if upper is not None:
        bound = cursor.bound(upper)
        query = query.where(column < bound if time else column <= bound)
    count, smallest = conn.execute(query.select_from(table)).one()
    return int(count), smallest


def _rows_in(
    conn: sa.Connection,
    table: sa.Table,
    cursor: CursorColumn,
    ranges: list[Range],
    lower_inclusive: bool = True,
) -> SourceLag:
    """How many rows have a cursor in `ranges`, and the smallest such cursor."""
    waiting, oldest = 0, None
    for lower, upper in ranges:
        # An unlanded range: a window's [lower, upper), or all rows past a cut (lower, ...).
        count, smallest = _count(conn, table, cursor, lower, upper, time=lower_inclusive)
        waiting += count
        if smallest is not None and (oldest is None or smallest < oldest):
            oldest = smallest
    return SourceLag(
        waiting=waiting, unit="rows", oldest_waiting_at=_as_time(oldest) if waiting else None
    )


def _as_time(value: Any) -> datetime | None:
    """A cursor value as a UTC time, or None when the cursor is not a time (an id)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), tzinfo=UTC)
    return None


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
