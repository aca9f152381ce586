"""Land a database slice read by DuckDB's own scanner, in the transaction that replaces it.

The same contract as landing.py's Arrow path (dlt owns the schema; one transaction deletes
the slice and inserts it; a failure anywhere rolls it back), with the read inside DuckDB:
the source is attached to the warehouse's writing connection and the insert is
`INSERT INTO target BY NAME SELECT … FROM <the slice>`, rows streaming from the source's
wire protocol into DuckDB's row groups with no Arrow or Python in between. Memory stays
flat (the writer's DuckDB memory cap bounds it; bench/README.md measured 10M rows).

The warehouse lock is held while the source is read, as on the Arrow path. Reading into a
private DuckDB first and copying from it under the lock would shorten the lock's window to
the local copy, but writes every row twice; the `duckdb_warehouse` pool runs one warehouse
step at a time anyway, so the lock window costs no concurrency (docs/sources/sql.md).

One writing connection serves the whole landing, under the lock: it notes what the dataset
holds (schema_undo.py), attaches the source to read the slice's column types with no rows
(from which dlt creates or migrates the table as it does from the first Arrow batch), lends
itself to dlt's schema step, and runs the transaction. DuckDB loads the scanner extension
once per database instance (0.08 s, mostly its signature check), so a second connection
would pay it twice.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from dlt.extract import DltResource

from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.sql_quoting import quote_identifier, quote_literal
from ingestion_platform.core.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    Warehouse,
    delete_older_versions,
    delete_slices,
)
from ingestion_platform.sources.api.landing import LandingReport
from ingestion_platform.sources.sql.connectors.scanner import (
    ScanMode,
    ScanPlan,
    SliceScan,
    attached,
    sample_scan,
    scan_failure,
    slice_scan,
)
from ingestion_platform.sources.sql.connectors.scanner_blind_spots import (
    MAX_KEYS,
    BlindSpot,
    blind_spots,
    lookup_key,
    raise_if_found,
)
from ingestion_platform.sources.sql.connectors.sql_database import (
    CursorColumn,
    SliceBounds,
    SourceReadError,
)
from ingestion_platform.sources.sql.connectors.sql_types import (
    DUCKDB_TYPE,
    TypePlan,
    align_column_types,
)
from ingestion_platform.sources.sql.landing import (
    landing_pipeline,
    migrate_table,
    warehouse_table_name,
)
from ingestion_platform.sources.sql.schema_undo import dataset_before, undone_on_failure

# The cursor as the window lookup sees it, beside the slice's own columns.
_CURSOR = "__slice_cursor"


@dataclass(frozen=True)
class ScanSlice:
    """What to land: the table's scan plan, the slice and the keys its rows take."""

    plan: ScanPlan
    engine: sa.Engine
    cursor: CursorColumn
    bounds: SliceBounds
    batch_keys: list[str]
    # For a run of several time partitions: each key's window start, in key order.
    window_starts: list[datetime] | None = None
    tinyint1_as_boolean: bool = False


def land_scanned_slice(
    *,
    warehouse: Warehouse,
    dataset: str,
    pipeline_name: str,
    resource: DltResource,
    type_plan: TypePlan,
    read: ScanSlice,
    primary_key: list[str] | None = None,
) -> tuple[LandingReport, ScanMode]:
    """Replace the rows of `read.batch_keys` in `dataset.<table>` with the scanned slice.

    `resource` is the ConnectorX path's dlt resource for the table, never iterated: its
    column hints make dlt create the same warehouse columns. Returns the report and how the
    slice was read.
    """
    started = time.monotonic()
    loaded_at = datetime.now(UTC)
    table = resource.table_name
    assert isinstance(table, str), "database resources have a static table name"
    landed = warehouse_table_name(table)
    workdir = tempfile.mkdtemp(prefix=f"dlt-{pipeline_name}-")
    try:
        with warehouse.exclusive():
            # One connection for the whole landing: DuckDB loads the scanner extension once
            # per database instance (0.08 s, its signature check), and dlt's schema step
            # borrows this connection instead of opening the file again.
            connection = warehouse.open_writer()
            try:
                before = dataset_before(connection, dataset, landed)
                plan, sample = _sample(read, connection)
                read = replace(read, plan=plan)
                sample = _stamped(_with_warehouse_types(sample, plan, type_plan))
                with undone_on_failure(connection, before):
                    pipeline = landing_pipeline(
                        warehouse, dataset, pipeline_name, workdir, connection
                    )
                    migrated = migrate_table(pipeline, resource, sample, primary_key)
                    renamed = dict(zip(sample.schema.names, migrated.names, strict=True))
                    figures = _commit(
                        connection,
                        dataset,
                        landed,
                        read,
                        read.plan.renamed(renamed),
                        sample.rename_columns(migrated.names).schema,
                        migrated.key_columns,
                        loaded_at,
                    )
            finally:
                connection.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows_by_key = {key: rows for key, (rows, _) in figures.rows.items()}
    report = LandingReport(
        rows_by_table={table: sum(rows_by_key.values())},
        bytes_loaded=sum(nbytes for _, nbytes in figures.rows.values()),
        duration_seconds=time.monotonic() - started,
        new_columns={table: migrated.added} if migrated.added else {},
        columns_by_table={table: migrated.columns} if migrated.columns else {},
        emptied_batches=sorted(set(read.batch_keys) - {k for k, n in rows_by_key.items() if n}),
        rows_by_key={table: rows_by_key},
        superseded_rows=figures.superseded,
        table_existed=before.table_existed,
    )
    return report, figures.mode


def _sample(read: ScanSlice, connection: duckdb.DuckDBPyConnection) -> tuple[ScanPlan, pa.Table]:
    """No rows of the slice, with the types the scanner reads it as, and the plan that
    reads its text columns as text. The source is detached again afterwards: while it is
    attached, every information_schema query lists its tables too."""
    with attached(
        connection, read.plan.source, tinyint1_as_boolean=read.tinyint1_as_boolean
    ) as alias:
        plan = read.plan
        scanned = _describe(connection, sample_scan(plan, read.engine, alias))
        plan = plan.decoding(scanned)
        sample = connection.execute(sample_scan(plan, read.engine, alias).select_sql())
        return plan, sample.arrow().read_all()


def _describe(connection: duckdb.DuckDBPyConnection, scan: SliceScan) -> dict[str, str]:
    """The DuckDB type of each column `scan` reads."""
    try:
        found = connection.execute(f"describe {scan.select_sql()}").fetchall()
    except duckdb.Error as error:
        failure = scan_failure(error, scan.plan.source)
        if failure is None:
            raise
        raise failure from None
    return {name: str(data_type) for name, data_type, *_ in found}


def _with_warehouse_types(sample: pa.Table, plan: ScanPlan, type_plan: TypePlan) -> pa.Table:
    """The sample typed as ConnectorX types a first batch, so dlt creates the same columns;
    fields whose warehouse type dlt gets wrong carry it, as on the Arrow path."""
    wanted = {read.name: read.duckdb for read in type_plan.columns if read.duckdb}
    fields = []
    for field in plan.sample_types(sample.schema):
        if field.name in wanted:
            field = field.with_metadata({DUCKDB_TYPE: wanted[field.name].encode()})
        fields.append(field)
    return sample.cast(pa.schema(fields))


def _stamped(sample: pa.Table) -> pa.Table:
    """The sample with the key and load time every landed row carries (landing.py's types)."""
    sample = sample.append_column(BATCH_KEY_COLUMN, pa.array([], pa.string()))
    return sample.append_column(LOADED_AT_COLUMN, pa.array([], pa.timestamp("us", tz="UTC")))


@dataclass
class _Figures:
    rows: dict[str, tuple[int, int]]  # rows and bytes per batch key
    superseded: int
    mode: ScanMode


def _commit(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    table: str,
    read: ScanSlice,
    plan: ScanPlan,
    schema: pa.Schema,
    key_columns: list[str],
    loaded_at: datetime,
) -> _Figures:
    """Delete the slices and insert the scanned rows, in one transaction."""
    relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
    connection.execute("begin")
    try:
        # Before the source is attached: information_schema would list its tables too
        # (0.2 s of MariaDB's catalog at every query). dlt cannot create UUID/INTERVAL/
        # LIST/UBIGINT columns, fields say which; altered before the delete, since DuckDB
        # refuses to commit a table altered after rows of it were deleted.
        align_column_types(connection, dataset, table, schema)
        delete_slices(connection, dataset, [table], read.batch_keys)
        with attached(
            connection, plan.source, tinyint1_as_boolean=read.tinyint1_as_boolean
        ) as alias:
            try:
                scan = slice_scan(plan, read.engine, alias, read.cursor, read.bounds)
                try:
                    inserted = _run_insert(connection, scan, read, relation, loaded_at)
                except duckdb.ConstraintException as error:
                    behind = _null_behind(error, read, scan.plan)
                    if behind is None:
                        raise
                    raise behind from None
                _refuse_blind_spots(connection, relation, read, scan.plan)
                rows = _rows_and_bytes(connection, relation, read, inserted, schema)
                superseded = 0
                if key_columns and inserted:
                    superseded = delete_older_versions(
                        connection, relation, key_columns, read.batch_keys
                    )
                connection.execute("commit")
            except BaseException:
                _rollback(connection)  # an aborted transaction cannot detach the source
                raise
    except BaseException:
        _rollback(connection)
        raise
    return _Figures(rows, superseded, scan.mode)


def _refuse_blind_spots(
    connection: duckdb.DuckDBPyConnection, relation: str, read: ScanSlice, plan: ScanPlan
) -> None:
    """Fail the slice if the scanner landed a value as another one (scanner_blind_spots.py):
    the server is asked only about columns that landed what such a value becomes."""
    spots = blind_spots(plan)
    if not spots:
        return
    batch = quote_identifier(BATCH_KEY_COLUMN)
    landed = ", ".join(
        f"count(*) filter (where {spot.landed_as(quote_identifier(spot.column.name))})"
        for spot in spots
    )
    counts = fetch_row(
        connection,
        f"select {landed} from {relation} where list_contains(?, {batch})",  # noqa: S608
        [read.batch_keys],
    )
    suspects = [spot for spot, count in zip(spots, counts or (), strict=False) if count]
    if not suspects:
        return
    keys = _suspect_keys(connection, relation, read, plan, suspects)
    raise_if_found(suspects, plan, read.engine, read.cursor, read.bounds, keys)


def _suspect_keys(
    connection: duckdb.DuckDBPyConnection,
    relation: str,
    read: ScanSlice,
    plan: ScanPlan,
    suspects: list[BlindSpot],
) -> list[Any] | None:
    """The primary keys of the landed rows that may hold a blind spot's value (a genuine 0
    or NULL, usually), when the table has a one-column key and they are few; else None."""
    key = lookup_key(plan)
    if key is None:
        return None
    batch = quote_identifier(BATCH_KEY_COLUMN)
    either = " or ".join(spot.landed_as(quote_identifier(spot.column.name)) for spot in suspects)
    found = connection.execute(
        f"select {quote_identifier(key.name)} from {relation} "  # noqa: S608
        f"where list_contains(?, {batch}) and ({either}) limit {MAX_KEYS + 1}",
        [read.batch_keys],
    ).fetchall()
    return [value for (value,) in found] if len(found) <= MAX_KEYS else None


def _null_behind(
    error: duckdb.ConstraintException, read: ScanSlice, plan: ScanPlan
) -> SourceReadError | None:
    """The failure behind a NOT NULL violation: the scanner read a value of a NOT NULL column
    (MySQL's zero date) as NULL. None if the column held no such value."""
    found = re.search(r"NOT NULL constraint failed: [^.\s]+\.(\S+)", str(error))
    name = found.group(1).strip('"') if found else None
    suspects = [s for s in blind_spots(plan) if s.lands_as_null and s.column.name == name]
    try:
        raise_if_found(suspects, plan, read.engine, read.cursor, read.bounds)
    except SourceReadError as failure:
        return failure
    return None


def _rollback(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if it is still open."""
    with contextlib.suppress(duckdb.TransactionException):
        connection.execute("rollback")


def _run_insert(
    connection: duckdb.DuckDBPyConnection,
    scan: SliceScan,
    read: ScanSlice,
    relation: str,
    loaded_at: datetime,
) -> int:
    """Insert the slice; returns how many rows it inserted."""
    sql, parameters = _insert(relation, scan, read, loaded_at)
    try:
        (inserted,) = fetch_row(connection, sql, parameters) or (0,)
    except duckdb.Error as error:
        failure = scan_failure(error, scan.plan.source)
        if failure is None:
            raise
    else:
        return int(inserted)
    raise failure  # outside the `except`: the database's message, not DuckDB's chain


def _insert(
    relation: str, scan: SliceScan, read: ScanSlice, loaded_at: datetime
) -> tuple[str, list[Any]]:
    """The INSERT of the slice, each row keyed by its partition."""
    loaded = quote_literal(loaded_at.isoformat())
    stamp = f"{loaded}::timestamptz as {quote_identifier(LOADED_AT_COLUMN)}"
    key_name = quote_identifier(BATCH_KEY_COLUMN)
    if read.window_starts is None:
        (key,) = read.batch_keys
        select = scan.select_sql(f"{quote_literal(key)} as {key_name}, {stamp}")
        return f"insert into {relation} by name {select}", list(scan.parameters)
    # Several time windows: each row takes the key of the last window starting at or before
    # its cursor (the bounds keep every row within the run's windows).
    cursor = _cursor_sql(read.cursor)
    aware = read.cursor.kind == "timestamp_tz"
    starts = [s.astimezone(UTC) if aware else s.replace(tzinfo=None) for s in read.window_starts]
    start_type = "timestamptz[]" if aware else "timestamp[]"
    select = scan.select_sql(f"{cursor} as {quote_identifier(_CURSOR)}")
    sql = (
        f"insert into {relation} by name "  # noqa: S608
        f"select slice.* exclude ({quote_identifier(_CURSOR)}), windows.key as {key_name}, "
        f"{stamp} from ({select}) as slice asof left join "
        f"(select unnest(?::{start_type}) as start, unnest(?::varchar[]) as key) as windows "
        f"on slice.{quote_identifier(_CURSOR)} >= windows.start"
    )
    return sql, [*scan.parameters, starts, read.batch_keys]


def _cursor_sql(cursor: CursorColumn) -> str:
    """The cursor over the scanned columns, as a timestamp the windows compare with."""
    columns = [quote_identifier(name) for name in cursor.names]
    expression = columns[0] if len(columns) == 1 else f"coalesce({', '.join(columns)})"
    return f"cast({expression} as timestamp)" if cursor.kind == "date" else expression


def _rows_and_bytes(
    connection: duckdb.DuckDBPyConnection,
    relation: str,
    read: ScanSlice,
    inserted: int,
    schema: pa.Schema,
) -> dict[str, tuple[int, int]]:
    """Rows per landed key, and their bytes as Arrow would hold them.

    Bytes are the average width of (up to) the first 10,000 landed rows times the rows:
    summing every text's length would read the whole slice back (0.2 s at 2M rows).
    """
    batch = quote_identifier(BATCH_KEY_COLUMN)
    keys = read.batch_keys
    if read.window_starts is None:
        rows = {keys[0]: inserted} if inserted else {}
    else:
        found = connection.execute(
            f"select {batch}, count(*) from {relation} "  # noqa: S608
            f"where list_contains(?, {batch}) group by 1",
            [keys],
        ).fetchall()
        rows = {key: int(count) for key, count in found}
    if not inserted:
        return {}
    widths = " + ".join(_width(field) for field in schema)
    (width,) = fetch_row(
        connection,
        f"select avg({widths}) from (select * from {relation} "  # noqa: S608
        # A plain filter, so the scan stops at the limit (a semi-join reads every row).
        f"where list_contains(?, {batch}) limit 10000)",
        [keys],
    ) or (0,)
    return {key: (count, round(count * float(width or 0))) for key, count in rows.items()}


def _width(field: pa.Field) -> str:
    column = quote_identifier(field.name)
    try:
        return str(field.type.bit_width // 8)
    except ValueError:  # variable width: its bytes
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            return f"coalesce(octet_length({column}), 0)"
        return f"coalesce(strlen(cast({column} as varchar)), 0)"
