"""The metadata every landing reports, shaped so the Dagster UI can plot and show it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ingestion_platform.sources.api.landing import LandingReport


def landing_metadata(
    report: LandingReport, table: str, lower: Any, upper: Any
) -> dict[str, dg.RawMetadataValue]:
    """Rows, bytes, duration, numeric slice bounds, column schema and schema drift of `table`.

    dlt puts nested lists in child tables named `table__child`; they belong to this asset.
    """
    columns = report.columns_by_table.get(table, {})
    mine = lambda name: name == table or name.startswith(f"{table}__")  # noqa: E731
    new_columns = {name: added for name, added in report.new_columns.items() if mine(name)}
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": report.rows_by_table.get(table, 0),
        "rows_by_table": dg.MetadataValue.json(
            {name: rows for name, rows in report.rows_by_table.items() if mine(name)}
        ),
        "bytes_loaded": report.bytes_loaded,
        "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
        "slice": f"{_text(lower)} .. {_text(upper)}",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind) for name, kind in columns.items()]
        ),
        "new_columns": dg.MetadataValue.json(new_columns),
        "schema_changed": bool(new_columns),
    }
    metadata.update(_bounds(lower, upper))
    if report.superseded_rows:
        metadata["superseded_rows"] = report.superseded_rows
    if report.emptied_batches:
        metadata["emptied_batches"] = dg.MetadataValue.json(report.emptied_batches)
    return metadata


def partition_metadata(
    report: LandingReport, table: str, key: str, lower: Any, upper: Any
) -> dict[str, dg.RawMetadataValue]:
    """The figures of one partition of a run that landed several (a single-run backfill).

    Only figures that belong to this partition: the UI sums and plots them per partition.
    Run-wide ones (duration, NULL-cursor rows, drift) stay on the run's log and checks.
    """
    rows = report.rows_by_key.get(table, {}).get(key, 0)
    total = report.rows_by_table.get(table, 0)
    columns = report.columns_by_table.get(table, {})
    return {
        "dagster/row_count": rows,
        "rows_by_table": dg.MetadataValue.json({table: rows}),
        # Bytes are counted per Arrow batch; a batch spanning partitions is split by rows.
        "bytes_loaded": round(report.bytes_loaded * rows / total) if total else 0,
        "slice": f"{_text(lower)} .. {_text(upper)}",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind) for name, kind in columns.items()]
        ),
        **_bounds(lower, upper),
    }


def _bounds(lower: Any, upper: Any) -> dict[str, dg.RawMetadataValue]:
    """Slice bounds the UI can show and plot: timestamps for times, numbers for ids."""
    bounds: dict[str, dg.RawMetadataValue] = {}
    for name, bound in (("slice_start", lower), ("slice_end", upper)):
        if isinstance(bound, datetime):
            # A zone-less bound comes from a zone-less cursor column; shown as UTC.
            aware = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
            bounds[name] = dg.MetadataValue.timestamp(aware)
        elif isinstance(bound, int | float):
            bounds[name] = dg.MetadataValue.float(float(bound))
    return bounds


def _text(bound: Any) -> str:
    if bound is None:
        return "start"
    return bound.isoformat() if isinstance(bound, datetime) else str(bound)
