"""What a database run reports: its slice, its log lines, its metadata and its checks.

A single-run backfill lands many partitions with one query; each partition's
materialisation carries only its own rows, bytes and window (partition_metadata), while
the whole range's figures (duration, NULL-cursor rows, drift) go to the log and the in-run
health checks, never onto a partition where a sum over partitions would count them twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg

from ingestion_platform.core.batching import CursorSlice
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.health import landing_checks
from ingestion_platform.core.materialization import landing_metadata, partition_metadata
from ingestion_platform.sources.api.landing import LandingReport
from ingestion_platform.sources.sql.connectors.sql_database import BeforeStart, SliceBounds


def run_slice(context: dg.AssetExecutionContext, is_time: bool) -> tuple[list[str], SliceBounds]:
    """The run's partition keys and the cursor range they cover together."""
    if is_time:
        window = context.partition_time_window
        return list(context.partition_keys), SliceBounds.window(window.start, window.end)
    cut = CursorSlice.from_key(context.partition_key)
    return [cut.key], SliceBounds.after(cut.lo, cut.hi)


def window_starts(context: dg.AssetExecutionContext, keys: list[str]) -> list[datetime] | None:
    """Where each time partition of a several-partition run starts; None for one partition."""
    if len(keys) < 2:
        return None
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return [partitions_def.time_window_for_partition_key(key).start for key in keys]


def report_landing(
    context: dg.AssetExecutionContext,
    source: SourceContext,
    table: str,
    report: LandingReport,
    keys: list[str],
    bounds: SliceBounds,
    cursor: str,
    unseen: int,
    landed: int,
    fallback: str | None = None,
    before_start: BeforeStart | None = None,
) -> dg.MaterializeResult:
    """Log the landing, put each partition's own figures on it, and return the run's."""
    _log_landing(context, source, table, report, keys, cursor, unseen, fallback)
    early = before_start.rows if before_start else 0
    if before_start and early:
        _log_before_start(context, source, table, cursor, before_start)
    if len(keys) > 1:
        # Dagster copies a result's metadata onto every partition of the run, so a
        # multi-partition run's result carries none: each partition gets only its own.
        metadata: dict[str, Any] = {}
        for key in keys:
            lower, upper = _key_bounds(context, key)
            context.add_asset_metadata(
                partition_metadata(report, table, key, lower, upper), partition_key=key
            )
    else:
        metadata = landing_metadata(report, table, bounds.lower, bounds.upper)
        metadata["rows_null_cursor"] = unseen
        metadata["rows_before_start"] = early
    # A table's first landing creates every column; only later additions are drift.
    drifted = report.new_columns.get(table, []) if report.table_existed else []
    checks = landing_checks(
        context.asset_key,
        read=report.rows,
        quarantined=0,
        landed=landed,
        new_columns=drifted,
        null_cursor=unseen,
        before_start=early,
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _log_before_start(
    context: dg.AssetExecutionContext,
    source: SourceContext,
    table: str,
    cursor: str,
    found: BeforeStart,
) -> None:
    earliest = found.earliest
    day = earliest.date() if isinstance(earliest, datetime) else earliest
    context.log.warning(
        f"{source.name}.{table}: {found.rows} source rows have a cursor ({cursor}) before the "
        f"first partition's start ({found.start:%Y-%m-%d %H:%M}), so no partition can hold "
        f"them and they were not landed; the earliest is {earliest}. Fix: set `batch.start` "
        f"in {source.defs_file} to {day} or earlier, then backfill the new partitions"
    )


def _log_landing(
    context: dg.AssetExecutionContext,
    source: SourceContext,
    table: str,
    report: LandingReport,
    keys: list[str],
    cursor: str,
    unseen: int,
    fallback: str | None,
) -> None:
    name = f"{source.name}.{table}"
    superseded = (
        f"; {report.superseded_rows} older versions of their keys removed from other partitions"
        if report.superseded_rows
        else ""
    )
    context.log.info(
        f"{name}: landed {report.rows} rows for {len(keys)} partition(s) in "
        f"{report.duration_seconds:.2f}s{superseded}"
    )
    if unseen:
        if fallback:
            fix = (
                f"add a fallback column in {source.defs_file}, e.g. "
                f"`cursor: [{cursor}, {fallback}]`"
            )
        else:
            fix = (
                f"table {table!r} has no other column of the cursor's type to fall back on: "
                f"give those rows a {cursor}, or add such a column and list it after {cursor} "
                f"in {source.defs_file}"
            )
        context.log.warning(
            f"{name}: {unseen} source rows have a NULL cursor ({cursor}), so no partition "
            f"can hold them and they were not landed. Fix: {fix}"
        )


def _key_bounds(context: dg.AssetExecutionContext, key: str) -> tuple[Any, Any]:
    """The window of one partition of a multi-partition (backfill) run."""
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    window = partitions_def.time_window_for_partition_key(key)
    return window.start, window.end
