"""Land a database slice by streaming its Arrow batches into DuckDB, in one transaction.

A database slice is flat (no nested child tables) and needs no de-duplication, so it does
not need dlt's files at all: writing every batch to Parquet and reading it back is what made
the platform slower than a plain copy (bench/README.md). dlt still owns the schema: it
extracts an empty sample carrying the reflected column hints and the first batch's Arrow
types, and `sync_schema` creates or migrates the table (its schema evolution). Then one
DuckDB transaction deletes the slice and inserts the source's batches with a single
`INSERT … SELECT` over an Arrow stream: ConnectorX reads ahead while DuckDB writes, and
DuckDB writes full row groups to disk as they fill, so memory stays flat however large the
slice (one INSERT per batch instead kept the whole transaction in memory: 1.2 GB at 10M rows).

The transaction spans the read, so the warehouse lock is held for it. That costs no
concurrency: the `duckdb_warehouse` pool already runs one warehouse step at a time. A
failure anywhere (the source, a value DuckDB cannot cast) rolls the slice back.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dlt
import duckdb
import pyarrow as pa
from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCaseNaming
from dlt.extract import DltResource

from ingestion_platform.core.warehouse import (
    Warehouse,
    delete_older_versions,
    delete_slices,
    quote_identifier,
)
from ingestion_platform.sources.api.landing import BatchKeyOf, KeyStamper, LandingReport
from ingestion_platform.sources.sql.connectors.sql_types import align_column_types
from ingestion_platform.sources.sql.schema_undo import (
    DatasetBefore,
    dataset_before,
    undone_on_failure,
)

ArrowItem = pa.Table | pa.RecordBatch
# dlt's naming for DuckDB, which every landing pipeline uses.
_NAMING = SnakeCaseNaming()


def land_arrow_slice(
    *,
    warehouse: Warehouse,
    dataset: str,
    pipeline_name: str,
    resource: DltResource,
    batch_keys: list[str],
    key_of: BatchKeyOf,
    primary_key: list[str] | None = None,
) -> LandingReport:
    """Replace the rows of `batch_keys` in `dataset.<resource's table>` with what it yields.

    With a `primary_key`, the table keeps one row per key: a key landed here is removed from
    every other slice (its older version, landed before the row moved to this slice).
    """
    started = time.monotonic()
    stamper = KeyStamper(key_of, datetime.now(UTC))
    table = resource.table_name
    assert isinstance(table, str), "database resources have a static table name"
    # The report speaks of the declared table; the warehouse holds it under dlt's name.
    landed = warehouse_table_name(table)
    # Iterating the resource runs dlt's sql_table: its query, its Arrow backend, its chunks.
    # The iterator holds dlt's injected contexts until it ends, so it is closed here, not by
    # the garbage collector: closed late, it restores them over newer ones (dlt then raises
    # ContainerInjectableContextMangled, and a long-lived sensor process keeps stale state).
    source_items = iter(resource)
    stream: _SliceStream | None = None
    migrated: Migrated | None = None
    before: DatasetBefore | None = None
    workdir = tempfile.mkdtemp(prefix=f"dlt-{pipeline_name}-")
    try:
        items = (stamper(_as_arrow(item)) for item in source_items)
        first = next(items, None)
        with warehouse.exclusive():
            # One connection for the landing, which dlt's schema step borrows (as on the
            # scanner path).
            connection = warehouse.open_writer()
            try:
                # A slice with no rows changes no schema: nothing to undo.
                before = None if first is None else dataset_before(connection, dataset, landed)
                with undone_on_failure(connection, before):
                    if first is not None:
                        pipeline = landing_pipeline(
                            warehouse, dataset, pipeline_name, workdir, connection
                        )
                        migrated = migrate_table(pipeline, resource, first, primary_key)
                        stream = _SliceStream(itertools.chain([first], items), migrated.names)
                    key_columns = migrated.key_columns if migrated else []
                    superseded = _commit(
                        connection, dataset, landed, batch_keys, stream, key_columns
                    )
            finally:
                connection.close()
    finally:
        source_items.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return LandingReport(
        rows_by_table={table: stream.rows if stream else 0},
        bytes_loaded=stream.nbytes if stream else 0,
        duration_seconds=time.monotonic() - started,
        new_columns={table: migrated.added} if migrated and migrated.added else {},
        columns_by_table={table: migrated.columns} if migrated and migrated.columns else {},
        emptied_batches=sorted(set(batch_keys) - stamper.seen),
        rows_by_key={table: dict(stamper.rows_by_key)},
        superseded_rows=superseded,
        table_existed=before.table_existed if before else True,
    )


def warehouse_table_name(table: str) -> str:
    """The name dlt gives source table `table` in the warehouse (`Events` lands as `events`)."""
    return _NAMING.normalize_table_identifier(table)


def _as_arrow(item: object) -> ArrowItem:
    if not isinstance(item, ArrowItem):
        raise TypeError(f"expected Arrow batches from the database backend, got {type(item)}")
    return item


def landing_pipeline(
    warehouse: Warehouse,
    dataset: str,
    name: str,
    workdir: str,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> dlt.Pipeline:
    """dlt's pipeline for one landing; on a DuckDB file it borrows `connection`, if given."""
    warehouse.check_dataset(dataset)
    # A private working folder per run: concurrent runs never share dlt state.
    return dlt.pipeline(
        pipeline_name=name,
        pipelines_dir=workdir,
        destination=warehouse.dlt_destination(connection),
        dataset_name=dataset,
        progress=None,
    )


@dataclass(frozen=True)
class Migrated:
    """The table as dlt's schema step left it, in dlt's names."""

    names: list[str]  # the sample's columns
    added: list[str]  # columns the step added to the table
    columns: dict[str, str]  # every column's dlt data type
    key_columns: list[str]  # the primary key


def migrate_table(
    pipeline: dlt.Pipeline,
    resource: DltResource,
    first: ArrowItem,
    primary_key: list[str] | None,
) -> Migrated:
    """Let dlt create or evolve the table from an empty sample."""
    hints = resource.compute_table_schema()
    empty = _conform(first.slice(0, 0), hints["columns"])
    sample = dlt.resource([empty], name=hints["name"], columns=hints["columns"])
    pipeline.extract(sample, loader_file_format="parquet")
    pipeline.normalize()
    applied = pipeline.sync_schema()
    schema = pipeline.default_schema
    naming = schema.naming
    table = naming.normalize_table_identifier(hints["name"])
    return Migrated(
        names=[naming.normalize_identifier(name) for name in first.schema.names],
        added=list(applied.get(hints["name"], {}).get("columns", {})),
        columns={
            name: column.get("data_type", "unknown")
            for name, column in schema.get_table_columns(table).items()
        },
        key_columns=[naming.normalize_identifier(name) for name in primary_key or []],
    )


def _conform(sample: ArrowItem, hints: dict[str, Any]) -> ArrowItem:
    """The empty sample with the reflected nullability and decimal precision.

    ConnectorX types every column nullable and every decimal (38, 10); dlt keeps the
    reflected hints anyway but warns on every run that they differ. Data batches are not
    touched: DuckDB casts them into the table's columns on insert.
    """
    fields = []
    for arrow_field in sample.schema:
        hint = hints.get(arrow_field.name, {})
        field_type = arrow_field.type
        precision, scale = hint.get("precision"), hint.get("scale")
        if pa.types.is_decimal(field_type) and precision and scale is not None:
            field_type = pa.decimal128(precision, scale) if precision <= 38 else field_type
        nullable = hint.get("nullable", arrow_field.nullable)
        fields.append(pa.field(arrow_field.name, field_type, nullable, arrow_field.metadata))
    schema = pa.schema(fields, sample.schema.metadata)
    return sample.cast(schema)


@dataclass
class _SliceStream:
    """The slice's batches, renamed to dlt's column names, as one Arrow stream DuckDB scans.

    Counts what passes through, and keeps the error that stopped it: DuckDB reports an
    exception raised inside its scan only as a generic error.
    """

    items: Iterable[ArrowItem]
    names: list[str]
    rows: int = 0
    nbytes: int = 0
    error: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        items = iter(self.items)
        first = next(items)
        schema = first.rename_columns(self.names).schema
        return pa.RecordBatchReader.from_batches(
            schema, self._batches(itertools.chain([first], items), schema)
        )

    def _batches(self, items: Iterator[ArrowItem], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        try:
            for item in items:
                for batch in item.to_batches() if isinstance(item, pa.Table) else [item]:
                    batch = batch.rename_columns(self.names)
                    if batch.schema != schema:  # a chunk typed differently (e.g. all nulls)
                        batch = batch.cast(schema)
                    self.rows += batch.num_rows
                    self.nbytes += batch.nbytes
                    yield batch
        except BaseException as error:
            self.error = error
            raise


def _commit(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    table: str,
    batch_keys: list[str],
    stream: _SliceStream | None,
    key_columns: list[str],
) -> int:
    """Delete the slices and insert the stream, in one transaction.

    Returns how many older versions of the inserted keys were removed from other slices.
    """
    relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
    superseded = 0
    connection.execute("begin")
    try:
        if stream is not None:
            reader = stream.reader()
            # dlt cannot create UUID/INTERVAL/LIST/UBIGINT columns; fields needing one say so.
            # Altered before the delete: DuckDB refuses to commit a table altered after rows
            # of it were deleted.
            align_column_types(connection, dataset, table, reader.schema)
        delete_slices(connection, dataset, [table], batch_keys)
        if stream is not None:
            connection.register("slice_stream", reader)
            try:
                connection.execute(f"insert into {relation} by name select * from slice_stream")  # noqa: S608
            except duckdb.Error:
                if stream.error is None:
                    raise
            finally:
                connection.unregister("slice_stream")
            if stream.error is not None:
                # Raised outside the `except`, so its own cause chain stays as it was.
                raise stream.error
            if key_columns:
                superseded = delete_older_versions(connection, relation, key_columns, batch_keys)
        connection.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.TransactionException):
            connection.execute("rollback")
        raise
    return superseded
