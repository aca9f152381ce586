"""The DuckDB landing warehouse: one file, one schema per source, one writer at a time.

DuckDB lets one process hold a database file for writing, and a reader in another process
cannot open it meanwhile. Every process that touches the file therefore takes the same
file lock first, so concurrent runs, backfills and sensors queue instead of failing with a
lock error. API runs hold it for dlt's load step only; database runs for their streamed
read-and-write (sources/sql/landing.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from filelock import FileLock

# Re-exported: the landings import both from here.
from ingestion_platform.core.column_names import BATCH_KEY_COLUMN as BATCH_KEY_COLUMN
from ingestion_platform.core.column_names import LOADED_AT_COLUMN as LOADED_AT_COLUMN
from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.ducklake import CATALOG_ENV, DATA_PATH_ENV, DuckLake
from ingestion_platform.core.sql_quoting import quote_identifier

DEFAULT_WAREHOUSE_PATH = "data/warehouse.duckdb"
WAREHOUSE_PATH_ENV = "INGESTION_WAREHOUSE_PATH"
# DuckDB's default (80 % of RAM) lets a long load keep every block it wrote cached: the
# process grew by ~20 MiB per million rows landed (bench/README.md). With a cap it evicts
# written blocks, and spills to `<warehouse>.tmp/` if an operation needs more.
DEFAULT_MEMORY_LIMIT = "256MB"
MEMORY_LIMIT_ENV = "INGESTION_WAREHOUSE_MEMORY_LIMIT"
# The Dagster pool every ingestion step joins; dagster.yaml limits it to one step at a time.
WAREHOUSE_POOL = "duckdb_warehouse"
# Long enough for a large load ahead in the queue; a stuck writer still surfaces.
LOCK_TIMEOUT_SECONDS = 3600


def delete_slices(
    connection: duckdb.DuckDBPyConnection, dataset: str, roots: list[str], keys: list[str]
) -> None:
    """Delete the rows of `keys` from root tables and their dlt child tables (`root__*`).

    Runs in the caller's transaction. Tables are found in the warehouse itself: a run that
    extracted nothing has no dlt schema to ask, yet its slice may hold rows of an earlier load.
    """
    existing = {
        name
        for (name,) in connection.execute(
            "select table_name from information_schema.tables where table_schema = ?", [dataset]
        ).fetchall()
    }
    batch = quote_identifier(BATCH_KEY_COLUMN)
    for root in (root for root in roots if root in existing):
        root_relation = f"{quote_identifier(dataset)}.{quote_identifier(root)}"
        for child in sorted(t for t in existing if t.startswith(f"{root}__")):
            relation = f"{quote_identifier(dataset)}.{quote_identifier(child)}"
            connection.execute(
                f"delete from {relation} where _dlt_root_id in "  # noqa: S608
                f"(select _dlt_id from {root_relation} where {batch} in (select unnest(?)))",
                [keys],
            )
        connection.execute(
            f"delete from {root_relation} where {batch} in (select unnest(?))",  # noqa: S608
            [keys],
        )


def delete_older_versions(
    connection: duckdb.DuckDBPyConnection, relation: str, key_columns: list[str], keys: list[str]
) -> int:
    """Delete rows outside the slices `keys` whose primary key a row inside them also has.

    The rows just landed were read from the source last, and a source holds one version of
    a key, so they are current: a row whose cursor moved (an update) leaves its old slice.
    Runs in the caller's transaction; returns how many rows it deleted.
    """
    batch = quote_identifier(BATCH_KEY_COLUMN)
    others = fetch_row(
        connection,
        f"select 1 from {relation} where {batch} not in (select unnest(?)) limit 1",  # noqa: S608
        [keys],
    )
    if others is None:  # the first slice of a table: nothing to compare against
        return 0
    same_key = " and ".join(
        f"{relation}.{quote_identifier(c)} = landed.{quote_identifier(c)}" for c in key_columns
    )
    listed = ", ".join(quote_identifier(c) for c in key_columns)
    (deleted,) = fetch_row(
        connection,
        f"delete from {relation} using (select distinct {listed} from {relation} "  # noqa: S608
        f"where {batch} in (select unnest(?))) as landed "
        f"where {same_key} and {relation}.{batch} not in (select unnest(?))",
        [keys, keys],
    )  # type: ignore[misc]
    return int(deleted)


class DatasetNamedLikeWarehouse(ValueError):
    """A source's schema would have the warehouse file's catalog name."""


class Warehouse:
    """A DuckDB file plus the lock that serialises every process's access to it.

    With `lake`, the tables live in a DuckLake instead (core/ducklake.py) and `path` only places
    the local working folders (file staging) beside it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        lake: DuckLake | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.memory_limit = memory_limit
        self.lake = lake
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)

    def check_dataset(self, dataset: str) -> None:
        """Refuse a source whose schema has the warehouse file's name: DuckDB names the file's
        own catalog after it, then refuses every `schema.table` of it as ambiguous."""
        if not self.lake and dataset.lower() == self.path.stem.lower():
            raise DatasetNamedLikeWarehouse(
                f"source {dataset!r} has the name of the warehouse file {self.path.name}: DuckDB "
                f"calls the file's own catalog {self.path.stem!r} too, and refuses every "
                f"{dataset}.<table> as ambiguous. Nothing was landed. Fix: rename the warehouse "
                f"file (INGESTION_WAREHOUSE_PATH, now {self.path}) or the source's folder"
            )

    @property
    def write_config(self) -> dict[str, str | bool]:
        """DuckDB settings for every connection that writes."""
        # Rows are keyed by _batch_key, not by position: letting DuckDB reorder them halves
        # the memory of large inserts (measured in bench/sql_database.py).
        return {"memory_limit": self.memory_limit, "preserve_insertion_order": False}

    def open_writer(self) -> duckdb.DuckDBPyConnection:
        """A writing connection; the caller holds the lock (`exclusive`) and closes it."""
        return self._open(read_only=False)

    @contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the warehouse lock; the body may open the file for writing.

        `timeout` (seconds) bounds the wait, for callers that would rather skip than queue
        behind a long load (a sensor tick); it raises `filelock.Timeout`.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wait = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
        if self.lake:
            with self.lake.writer_lock(wait):
                yield
            return
        with self._lock.acquire(timeout=wait):
            yield

    @contextmanager
    def connect(self, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection opened and closed under the lock (a lake's readers need none)."""
        # A lake's reader sees the last committed snapshot; a file cannot be opened at all
        # while a writer holds it.
        with nullcontext() if self.lake and read_only else self.exclusive():
            connection = self._open(read_only)
            try:
                yield connection
            finally:
                connection.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.lake:
            return self.lake.connect(self.write_config, read_only=read_only)
        if not read_only:
            return duckdb.connect(str(self.path), config=self.write_config)
        if not self.path.exists():
            duckdb.connect(str(self.path)).close()
        return duckdb.connect(str(self.path), read_only=True)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as connection:
            return connection.execute(sql, list(params)).fetchall()

    def table_exists(self, schema: str, table: str) -> bool:
        with nullcontext() if self.lake else self.exclusive():
            return self.table_exists_unlocked(schema, table)

    def count(self, schema: str, table: str, batch: str | None = None) -> int:
        """Rows landed in `schema.table`, optionally only those of one batch (partition)."""
        if not self.table_exists(schema, table):
            return 0
        relation = f"{quote_identifier(schema)}.{quote_identifier(table)}"
        if batch is None:
            return self.query(f"select count(*) from {relation}")[0][0]  # noqa: S608
        sql = f"select count(*) from {relation} where {quote_identifier(BATCH_KEY_COLUMN)} = ?"  # noqa: S608
        return self.query(sql, (batch,))[0][0]

    def table_exists_unlocked(self, schema: str, table: str) -> bool:
        """Whether `schema.table` exists; the caller holds the lock (`exclusive`)."""
        if not self.lake and not self.path.exists():
            return False
        connection = self._open(read_only=True)
        try:
            return _table_exists(connection, schema, table)
        finally:
            connection.close()

    def count_batches(self, schema: str, table: str, keys: Sequence[str]) -> int:
        """Rows of `schema.table` in the slices `keys`."""
        if not self.lake and not self.path.exists():
            return 0
        with self.connect() as connection:  # one connection: opening one costs ~10 ms
            if not _table_exists(connection, schema, table):
                return 0
            relation = f"{quote_identifier(schema)}.{quote_identifier(table)}"
            batch = quote_identifier(BATCH_KEY_COLUMN)
            sql = f"select count(*) from {relation} where {batch} in (select unnest(?))"  # noqa: S608
            (count,) = fetch_row(connection, sql, [list(keys)]) or (0,)
            return int(count)

    def dlt_destination(self, connection: duckdb.DuckDBPyConnection | None = None) -> Any:
        """dlt's destination for the warehouse.

        On a DuckDB file, dlt may borrow an open writing `connection` (the caller holds the
        lock): the file cannot be opened twice in one process with other settings. A lake's
        destination always attaches the lake itself.
        """
        if self.lake:
            return self.lake.dlt_destination()
        import dlt
        from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

        credentials = DuckDbCredentials(connection or str(self.path))
        credentials.global_config = self.write_config
        return dlt.destinations.duckdb(credentials=credentials)


def _table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    (found,) = fetch_row(
        connection,
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ) or (0,)
    return bool(found)


class WarehouseResource(dg.ConfigurableResource):
    """Where the landing warehouse lives: a DuckDB file, or a DuckLake.

    Settings are read when a run needs them, never at import: `path` if set, else
    INGESTION_WAREHOUSE_PATH, else data/warehouse.duckdb (relative to the working directory);
    `memory_limit` (DuckDB's, for writes) if set, else INGESTION_WAREHOUSE_MEMORY_LIMIT, else
    256MB. `ducklake_catalog` (else INGESTION_WAREHOUSE_DUCKLAKE_CATALOG), a PostgreSQL URL,
    switches the tables to a DuckLake whose Parquet files go to `ducklake_data_path` (else
    INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH); `path` then only places file staging.
    """

    path: str | None = None
    memory_limit: str | None = None
    ducklake_catalog: str | None = None
    ducklake_data_path: str | None = None

    def get(self) -> Warehouse:
        catalog = self.ducklake_catalog or os.environ.get(CATALOG_ENV)
        data_path = self.ducklake_data_path or os.environ.get(DATA_PATH_ENV)
        return Warehouse(
            self.path or os.environ.get(WAREHOUSE_PATH_ENV) or DEFAULT_WAREHOUSE_PATH,
            self.memory_limit or os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT,
            lake=DuckLake.from_settings(catalog, data_path) if catalog else None,
        )
