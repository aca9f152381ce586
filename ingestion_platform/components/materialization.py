"""The metadata every landing reports, shaped so the Dagster UI can plot and show it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg

from ingestion_platform.landing import LandingReport


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
    for name, bound in (("slice_start", lower), ("slice_end", upper)):
        numeric = _numeric(bound)
        if numeric is not None:
            metadata[name] = dg.MetadataValue.float(numeric)
    if report.emptied_batches:
        metadata["emptied_batches"] = dg.MetadataValue.json(report.emptied_batches)
    return metadata


def _numeric(bound: Any) -> float | None:
    """Datetimes as epoch seconds and ids as themselves, so the UI can plot slice bounds."""
    if isinstance(bound, datetime):
        return bound.timestamp()
    if isinstance(bound, int | float):
        return float(bound)
    return None


def _text(bound: Any) -> str:
    if bound is None:
        return "start"
    return bound.isoformat() if isinstance(bound, datetime) else str(bound)
