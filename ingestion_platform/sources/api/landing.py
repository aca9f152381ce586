"""Land one slice of records (API pages) into the warehouse with dlt, replacing exactly that slice.

Every row gets two columns: `_batch_key` (the partition it belongs to) and `_loaded_at`.
Nested records load with dlt's `merge` / `delete-insert`, scoped to this run's batch keys,
so dlt deletes the slice's old rows and inserts the new ones in one transaction, child
tables included; a slice that is now empty has nothing for dlt to load, so its old rows are
deleted explicitly once the load has succeeded. Flat database slices skip dlt's files
altogether (sources/sql/landing.py).

Extract and normalise run outside the warehouse lock (they only write files in a private
working folder); only the commit holds it. A run that fails before or during the commit
leaves every table as it was.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention
from dlt.extract import DltResource

from ingestion_platform.core.sql_quoting import quote_literal
from ingestion_platform.core.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    Warehouse,
    delete_slices,
    quote_identifier,
)

_NAMING = NamingConvention()

# Returns the batch key of every row of an Arrow table, or of one JSON record.
BatchKeyOf = Callable[[Any], "pa.Array | str"]


@dataclass
class LandingReport:
    """What one landing did, for the run's metadata."""

    rows_by_table: dict[str, int]
    bytes_loaded: int
    duration_seconds: float
    new_columns: dict[str, list[str]] = field(default_factory=dict)
    columns_by_table: dict[str, dict[str, str]] = field(default_factory=dict)
    emptied_batches: list[str] = field(default_factory=list)
    # Rows of each root table per batch key: one run can land several partitions.
    rows_by_key: dict[str, dict[str, int]] = field(default_factory=dict)
    # Older versions of landed keys removed from other slices (one current row per key).
    superseded_rows: int = 0
    # Whether the table was there before this landing (its first landing is not drift).
    table_existed: bool = True

    @property
    def rows(self) -> int:
        return sum(self.rows_by_table.values())


class KeyStamper:
    """Adds `_batch_key` and `_loaded_at` to every item and remembers which keys it saw."""

    def __init__(self, key_of: BatchKeyOf, loaded_at: datetime) -> None:
        self.key_of = key_of
        self.loaded_at = loaded_at
        self._loaded_at_scalar = pa.scalar(loaded_at, pa.timestamp("us", tz="UTC"))
        self.rows_by_key: Counter[str] = Counter()

    @property
    def seen(self) -> set[str]:
        """The batch keys that received at least one row."""
        return {key for key, rows in self.rows_by_key.items() if rows}

    def __call__(self, item: Any) -> Any:
        if isinstance(item, pa.Table | pa.RecordBatch):
            keys = self.key_of(item)
            if isinstance(keys, str):
                self.rows_by_key[keys] += item.num_rows
                keys = pa.repeat(pa.scalar(keys, pa.string()), item.num_rows)
            else:
                for entry in pc.value_counts(keys).to_pylist():
                    if entry["values"] is not None:
                        self.rows_by_key[entry["values"]] += entry["counts"]
            loaded = pa.repeat(self._loaded_at_scalar, item.num_rows)
            item = item.append_column(BATCH_KEY_COLUMN, keys)
            return item.append_column(LOADED_AT_COLUMN, loaded)
        key = self.key_of(item)
        self.rows_by_key[key] += 1
        return {**item, BATCH_KEY_COLUMN: key, LOADED_AT_COLUMN: self.loaded_at}


def land_slice(
    *,
    warehouse: Warehouse,
    dataset: str,
    pipeline_name: str,
    resources: Iterable[DltResource],
    batch_keys: list[str],
    key_of: BatchKeyOf,
) -> LandingReport:
    """Extract `resources`, then replace the rows of `batch_keys` in `dataset` with them.

    dlt's merge also de-duplicates records on their primary key (pages may repeat a record).
    """
    warehouse.check_dataset(dataset)
    started = time.monotonic()
    loaded_at = datetime.now(UTC)
    stampers: dict[str, KeyStamper] = {}
    roots = []
    for resource in resources:
        stamper = stampers[resource.name] = KeyStamper(key_of, loaded_at)
        resource.apply_hints(
            write_disposition={
                "disposition": "merge",
                "strategy": "delete-insert",
                # Delete exactly this run's slices. (A merge key would do the same through a
                # join, and OR-ed with a primary key it becomes a nested loop that grows with
                # the square of the slice: bench/README.md.)
                "destination_scope": _scope(batch_keys, _primary_key(resource)),
            },
        )
        resource.add_map(stamper)
        roots.append(resource)

    # A private working folder per run: concurrent runs never share dlt state, and dlt
    # never needs to restore state from the warehouse (slices are explicit, not dlt cursors).
    workdir = tempfile.mkdtemp(prefix=f"dlt-{pipeline_name}-")
    try:
        pipeline = dlt.pipeline(
            pipeline_name=pipeline_name,
            pipelines_dir=workdir,
            destination=warehouse.dlt_destination(),
            dataset_name=dataset,
            progress=None,
        )
        # Parquet, not dlt's default INSERT statements for JSON records: DuckDB loads it
        # several times faster (measured in bench/rest_api.py).
        pipeline.extract(roots, loader_file_format="parquet")
        normalize_info = pipeline.normalize()
        rows_by_table = {
            table: count
            for table, count in normalize_info.row_counts.items()
            if not table.startswith("_dlt")
        }
        with warehouse.exclusive():
            seen = set().union(*(stamper.seen for stamper in stampers.values()))
            bytes_loaded, new_columns, emptied = _load_with_dlt(
                pipeline, warehouse, dataset, roots, batch_keys, seen
            )
        return LandingReport(
            rows_by_table=rows_by_table,
            bytes_loaded=bytes_loaded,
            duration_seconds=time.monotonic() - started,
            new_columns=new_columns,
            columns_by_table={
                table: {
                    name: column.get("data_type", "unknown")
                    for name, column in pipeline.default_schema.get_table_columns(table).items()
                }
                for table in rows_by_table
            },
            emptied_batches=emptied,
            rows_by_key={
                resource.table_name: dict(stampers[resource.name].rows_by_key)  # type: ignore[misc]
                for resource in roots
            },
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _load_with_dlt(
    pipeline: dlt.Pipeline,
    warehouse: Warehouse,
    dataset: str,
    roots: list[DltResource],
    batch_keys: list[str],
    seen: set[str],
) -> tuple[int, dict[str, list[str]], list[str]]:
    """dlt's merge load, then empty the slices that extracted nothing (dlt has no rows to key)."""
    load_info = pipeline.load()
    load_info.raise_on_failed_jobs()
    emptied = sorted(set(batch_keys) - seen)
    if emptied:
        connection = warehouse.open_writer()
        try:
            connection.execute("begin")
            delete_slices(connection, dataset, [r.table_name for r in roots], emptied)
            connection.execute("commit")
        finally:
            connection.close()
    return _bytes_loaded(load_info), _new_columns(load_info), emptied


def _primary_key(resource: DltResource) -> list[str]:
    """The resource's declared primary key, in dlt's (normalised) column names."""
    declared = resource.compute_table_schema().get("columns", {})
    return [
        _NAMING.normalize_identifier(name)
        for name, column in declared.items()
        if column.get("primary_key")
    ]


def _scope(batch_keys: list[str], primary_key: list[str]) -> str:
    """The SQL condition selecting the rows this load replaces (dlt formats `{table}` in it).

    The rows of `batch_keys`, and with a primary key also every older version, in any other
    slice, of a key this load brings: the table keeps one current row per key.
    """
    literals = ", ".join(quote_literal(key) for key in batch_keys)
    condition = f"{quote_identifier(BATCH_KEY_COLUMN)} IN ({literals})"
    condition = condition.replace("{", "{{").replace("}", "}}")
    if primary_key:
        listed = ", ".join(quote_identifier(name) for name in primary_key)
        # dlt substitutes its staging table for `{staging_table}`; a row-value IN works on
        # DuckDB for one column and several.
        condition += f" OR ({listed}) IN (SELECT {listed} FROM {{staging_table}})"  # noqa: S608
    return condition


def _bytes_loaded(load_info: Any) -> int:
    return sum(
        job.file_size
        for package in load_info.load_packages
        for job in package.jobs.get("completed_jobs", [])
        if not job.job_file_info.table_name.startswith("_dlt")
    )


def _new_columns(load_info: Any) -> dict[str, list[str]]:
    """Columns dlt added in this load (schema drift at the source shows up here)."""
    added: dict[str, list[str]] = {}
    for package in load_info.load_packages:
        for table_name, table in package.schema_update.items():
            if table_name.startswith("_dlt"):
                continue
            columns = [c for c in table.get("columns", {}) if not c.startswith("_dlt")]
            if columns:
                added.setdefault(table_name, []).extend(columns)
    return added
