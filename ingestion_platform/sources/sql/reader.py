"""Which reader lands a table's slice, DuckDB's scanner or the Arrow path, and the run's log
lines that say which and why.

`backend: auto` reads PostgreSQL and MySQL/MariaDB tables through DuckDB's scanner
(scanner_landing.py) unless a column would land otherwise than on the Arrow path; that
table then takes the Arrow path (landing.py) and the run's log names the column and why.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa
from dlt.extract import DltResource

from ingestion_platform.core.database_urls import shown_url
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.api.landing import LandingReport
from ingestion_platform.sources.sql.connectors.scanner import (
    ScannerUnavailable,
    ScanPlan,
    plan_scan,
)
from ingestion_platform.sources.sql.connectors.sql_database import SourceDatabaseError
from ingestion_platform.sources.sql.connectors.sql_types import TypePlan, plan_types
from ingestion_platform.sources.sql.scanner_landing import ScanSlice, land_scanned_slice

# Dialects DuckDB's own scanners read; SQLite keeps the Arrow path.
SCANNED_DIALECTS = ("postgresql", "mysql", "mariadb")
SCAN_MODES = {
    "query": "the bounded SELECT run by the server",
    "table": "parallel reads of the table, bounds pushed down",
}


def scanner_plan(
    context: dg.AssetExecutionContext,
    table_name: str,
    engine: sa.Engine,
    url: str,
    reflected: sa.Table,
    *,
    tinyint1_as_boolean: bool,
) -> tuple[ScanPlan, TypePlan] | None:
    """How DuckDB's scanner reads the table, or None (with the reason in the run's log).

    Called for `backend: auto` only; the type plan is the ConnectorX path's, whose text
    casts and warehouse types the scanner path shares.
    """
    if engine.dialect.name not in SCANNED_DIALECTS:
        return None
    type_plan = plan_types(
        reflected, engine.dialect, "connectorx", tinyint1_as_boolean=tinyint1_as_boolean, quiet=True
    )
    plan = plan_scan(reflected, engine.dialect, url, type_plan)
    if isinstance(plan, ScanPlan):
        return plan, type_plan
    reader = "ConnectorX" if type_plan.backend == "connectorx" else "the pyarrow backend"
    context.log.warning(f"table {table_name!r}: {plan}; read with {reader}")
    return None


def land_scanned(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    source: SourceContext,
    table_name: str,
    resource: DltResource,
    type_plan: TypePlan,
    read: ScanSlice,
    primary_key: list[str] | None,
) -> LandingReport:
    """Land the slice through the scanner; a source that refuses it fails naming the fix."""
    try:
        report, mode = land_scanned_slice(
            warehouse=warehouse,
            dataset=source.name,
            pipeline_name=f"{source.name}__{table_name}",
            resource=resource,
            type_plan=type_plan,
            read=read,
            primary_key=primary_key,
        )
    except ScannerUnavailable as refused:
        url = shown_url(read.engine.url)
        raise SourceDatabaseError(
            f"source {source.name!r}: DuckDB's {read.plan.source.kind} scanner cannot "
            f"connect to {url}: {refused}. Fix: check that the database is up and that "
            f"`connection` in {source.defs_file} points at it"
        ) from None
    context.log.info(
        f"{source.name}.{table_name}: read through DuckDB's {read.plan.source.kind} "
        f"scanner ({SCAN_MODES[mode]})"
    )
    return report
