"""Commit flat slices (database tables) straight from dlt's Parquet files, in one transaction.

dlt's merge load copies every file into a staging table and then from staging into the
table: the slice is written twice, which is most of the gap to a plain copy for large
tables (bench/README.md). A table read from a database has no nested child tables and
needs no de-duplication, so the swap is simple enough to do directly: dlt still creates
and migrates the table (`sync_schema`, its schema evolution), then one DuckDB transaction
deletes the slice and inserts the files. A failure anywhere rolls the slice back.
"""

from __future__ import annotations

import dlt
import duckdb

from ingestion_platform.warehouse import Warehouse, delete_slices, quote_identifier


def commit_flat_slices(
    warehouse: Warehouse, pipeline: dlt.Pipeline, tables: list[str], batch_keys: list[str]
) -> tuple[int, dict[str, list[str]]]:
    """Replace `batch_keys` in `tables` with the normalised files; returns bytes and new columns.

    The caller holds the warehouse lock.
    """
    dataset = pipeline.dataset_name
    files = _parquet_files(pipeline)
    before = _columns(warehouse, dataset)
    if pipeline.default_schema_name:  # nothing extracted, no schema: only deletes to do
        pipeline.sync_schema()
    connection = duckdb.connect(str(warehouse.path))
    try:
        connection.execute("set preserve_insertion_order = false")
        connection.execute("begin")
        delete_slices(connection, dataset, tables, batch_keys)
        existing = _columns(warehouse, dataset, connection)
        for table in tables:
            if table in existing and files.get(table):
                relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
                connection.execute(
                    f"insert into {relation} by name select * from read_parquet(?)",  # noqa: S608
                    [[path for path, _ in files[table]]],
                )
        connection.execute("commit")
        after = _columns(warehouse, dataset, connection)
    finally:
        connection.close()
    new_columns = {
        table: [c for c in after[table] if c not in before.get(table, [])]
        for table in tables
        if table in after and [c for c in after[table] if c not in before.get(table, [])]
    }
    return sum(size for table in tables for _, size in files.get(table, [])), new_columns


def _parquet_files(pipeline: dlt.Pipeline) -> dict[str, list[tuple[str, int]]]:
    files: dict[str, list[tuple[str, int]]] = {}
    for load_id in pipeline.list_normalized_load_packages():
        for job in pipeline.get_load_package_info(load_id).jobs["new_jobs"]:
            table = job.job_file_info.table_name
            if not table.startswith("_dlt"):
                files.setdefault(table, []).append((job.file_path, job.file_size))
    return files


def _columns(
    warehouse: Warehouse, dataset: str, connection: duckdb.DuckDBPyConnection | None = None
) -> dict[str, list[str]]:
    """Columns of every table in `dataset`, as the warehouse has them now."""
    own = connection is None
    connection = connection or duckdb.connect(str(warehouse.path))
    try:
        rows = connection.execute(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = ? order by table_name, ordinal_position",
            [dataset],
        ).fetchall()
    finally:
        if own:
            connection.close()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns
