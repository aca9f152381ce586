"""Land a database slice by streaming its Arrow batches into DuckDB, in one transaction.

A database slice is flat (no nested child tables) and needs no de-duplication, so it does
not need dlt's files at all: writing every batch to Parquet and reading it back is what made
the platform slower than a plain copy (bench/README.md). dlt still owns the schema: it
extracts an empty sample carrying the reflected column hints and the first batch's Arrow
types, and `sync_schema` creates or migrates the table (its schema evolution). Then one
DuckDB transaction deletes the slice and inserts the batches as the source delivers them;
ConnectorX keeps reading the next batches meanwhile, so the read and the write overlap.

The transaction spans the read, so the warehouse lock is held for it. That costs no
concurrency: the `duckdb_warehouse` pool already runs one warehouse step at a time. A
failure anywhere (the source, a value DuckDB cannot cast) rolls the slice back.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dlt
import duckdb
import pyarrow as pa
from dlt.extract import DltResource

from ingestion_platform.landing import BatchKeyOf, KeyStamper, LandingReport
from ingestion_platform.warehouse import Warehouse, delete_slices, quote_identifier


def land_arrow_slice(
    *,
    warehouse: Warehouse,
    dataset: str,
    pipeline_name: str,
    resource: DltResource,
    batch_keys: list[str],
    key_of: BatchKeyOf,
) -> LandingReport:
    """Replace the rows of `batch_keys` in `dataset.<resource's table>` with what it yields."""
    started = time.monotonic()
    stamper = KeyStamper(key_of, datetime.now(UTC))
    table = resource.table_name
    assert isinstance(table, str), "database resources have a static table name"
    # Iterating the resource runs dlt's sql_table: its query, its Arrow backend, its chunks.
    batches = (_as_arrow(item) for item in resource)
    first = next(batches, None)
    workdir = tempfile.mkdtemp(prefix=f"dlt-{pipeline_name}-")
    try:
        with warehouse.exclusive():
            added: list[str] = []
            if first is not None:
                first = stamper(first)
                pipeline = _pipeline(warehouse, dataset, pipeline_name, workdir)
                names, added = _migrate(pipeline, resource, first)
                columns = {
                    name: column.get("data_type", "unknown")
                    for name, column in pipeline.default_schema.get_table_columns(table).items()
                }
                stream = (stamper(batch) for batch in batches)
                rows, nbytes = _commit(
                    warehouse, dataset, table, batch_keys, itertools.chain([first], stream), names
                )
            else:
                columns = {}
                rows, nbytes = _commit(warehouse, dataset, table, batch_keys, iter(()), [])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return LandingReport(
        rows_by_table={table: rows},
        bytes_loaded=nbytes,
        duration_seconds=time.monotonic() - started,
        new_columns={table: added} if added else {},
        columns_by_table={table: columns} if columns else {},
        emptied_batches=sorted(set(batch_keys) - stamper.seen),
    )


def _as_arrow(item: object) -> pa.Table | pa.RecordBatch:
    if not isinstance(item, pa.Table | pa.RecordBatch):
        raise TypeError(f"expected Arrow batches from the database backend, got {type(item)}")
    return item


def _pipeline(warehouse: Warehouse, dataset: str, name: str, workdir: str) -> dlt.Pipeline:
    # A private working folder per run: concurrent runs never share dlt state.
    return dlt.pipeline(
        pipeline_name=name,
        pipelines_dir=workdir,
        destination=warehouse.dlt_destination(),
        dataset_name=dataset,
        progress=None,
    )


def _migrate(
    pipeline: dlt.Pipeline, resource: DltResource, first: pa.Table | pa.RecordBatch
) -> tuple[list[str], list[str]]:
    """Let dlt create or evolve the table from an empty sample.

    Returns dlt's names for the batch's columns and the columns dlt added to the table.
    """
    hints = resource.compute_table_schema()
    sample = dlt.resource([first.slice(0, 0)], name=hints["name"], columns=hints["columns"])
    pipeline.extract(sample, loader_file_format="parquet")
    pipeline.normalize()
    applied = pipeline.sync_schema()
    naming = pipeline.default_schema.naming
    added = list(applied.get(hints["name"], {}).get("columns", {}))
    return [naming.normalize_identifier(name) for name in first.schema.names], added


def _commit(
    warehouse: Warehouse,
    dataset: str,
    table: str,
    batch_keys: list[str],
    batches: Iterator[pa.Table | pa.RecordBatch],
    names: list[str],
) -> tuple[int, int]:
    """Delete the slices, insert every batch, commit; returns rows and Arrow bytes inserted."""
    relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
    insert = f"insert into {relation} by name select * from slice_batch"  # noqa: S608
    rows = nbytes = 0
    connection = duckdb.connect(str(warehouse.path))
    try:
        # Rows are keyed by _batch_key, not by position; reordering halves DuckDB's memory.
        connection.execute("set preserve_insertion_order = false")
        connection.execute("begin")
        delete_slices(connection, dataset, [table], batch_keys)
        for batch in batches:
            connection.register("slice_batch", batch.rename_columns(names))
            connection.execute(insert)
            connection.unregister("slice_batch")
            rows += batch.num_rows
            nbytes += batch.nbytes
        connection.execute("commit")
    finally:
        connection.close()
    return rows, nbytes
