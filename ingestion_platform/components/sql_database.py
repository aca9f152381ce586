"""Relational database tables (PostgreSQL, MySQL/MariaDB, SQLite) landed slice by slice.

One asset per table. A time batch reads the window `start <= cursor < end` and runs on a
schedule; a size batch reads `lo < cursor <= hi` and a sensor cuts a slice whenever that
many new rows have been recorded. Reads go through dlt's `sql_table` with an Arrow backend
(ConnectorX streaming record batches by default), so memory stays bounded by `chunk_size`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
import sqlalchemy as sa

from ingestion_platform.arrow_landing import land_arrow_slice
from ingestion_platform.batching import BatchSpec, CursorSlice, scheduled_definitions
from ingestion_platform.components.declaration import Setting, SourceContext
from ingestion_platform.components.materialization import landing_metadata
from ingestion_platform.components.time_keys import key_assigner
from ingestion_platform.connectors.sql_database import (
    Backend,
    CursorColumn,
    MissingInSource,
    SliceBounds,
    SourceDatabaseError,
    inspect_table,
    make_engine,
    measure_pending,
    read_failure,
    safe_url,
    slice_resource,
)
from ingestion_platform.pending import Pending
from ingestion_platform.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.warehouse import WAREHOUSE_POOL, WarehouseResource


class SqlTable(dg.Model):
    """One table to land: its name, the column that orders new rows, and its primary key."""

    name: str
    cursor: str | None = None
    primary_key: list[str] | None = None


class SqlDatabaseSource(dg.Component, dg.Model, dg.Resolvable):
    """Tables of a relational database, landed in DuckDB one exact slice at a time."""

    connection: Setting
    tables: list[SqlTable]
    batch: BatchSpec
    db_schema: str | None = None
    cursor: str | None = None
    backend: Literal["auto", "connectorx", "pyarrow"] = "auto"
    chunk_size: int = 100_000
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: int = 30

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        partitions = self.batch.partitions_def
        assets = [
            self._table_asset(source, index, table, partitions(f"{source.name}__{table.name}"))
            for index, table in enumerate(self.tables)
        ]
        running = self.automation == "running"
        if self.batch.is_time:
            return scheduled_definitions(source.name, assets, running)
        streams = [
            SizeStream(table.name, [asset.key], asset.partitions_def)  # type: ignore[arg-type]
            for table, asset in zip(self.tables, assets, strict=True)
        ]
        sensor = build_size_sensor(
            name=f"{source.name}__size_sensor",
            spec=self.batch,
            streams=streams,
            open_measure=lambda: self._open_measure(source),
            minimum_interval_seconds=self.sensor_interval_seconds,
            description=f"Cuts a partition of {source.name} per {self.batch.size_threshold} "
            "new rows of each table.",
            running=running,
        )
        return dg.Definitions(assets=assets, sensors=[sensor])

    def _check(self, source: SourceContext) -> None:
        if not self.tables:
            raise source.error("tables", "no tables declared", "list at least one table")
        seen: set[str] = set()
        for index, table in enumerate(self.tables):
            if table.name in seen:
                raise source.error(
                    f"tables[{index}].name",
                    f"table {table.name!r} is declared twice",
                    "declare each table once",
                )
            seen.add(table.name)
            if not (table.cursor or self.cursor):
                raise source.error(
                    f"tables[{index}].cursor",
                    f"table {table.name!r} has no cursor column, so its batches cannot be sliced",
                    "set `cursor:` on the table (or for the whole source) to a column that "
                    "grows with new rows, e.g. updated_at or id",
                )
        if self.batch.size_unit != "rows" and not self.batch.is_time:
            raise source.error(
                "batch",
                f"a database source counts rows, not {self.batch.size_unit}",
                "use `rows: N` (or a time batch)",
            )
        if self.chunk_size <= 0:
            raise source.error("chunk_size", "must be positive", "e.g. chunk_size: 100000")

    def _table_asset(
        self,
        source: SourceContext,
        index: int,
        table: SqlTable,
        partitions_def: dg.PartitionsDefinition,
    ) -> dg.AssetsDefinition:
        boundary = "time window" if self.batch.is_time else f"{self.batch.size_threshold} rows"

        @dg.asset(
            key=[source.name, table.name],
            group_name=source.name,
            kinds={"sql", "dlt", "duckdb"},
            description=f"Table {table.name} of {source.name}, landed per {boundary}.",
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run() if self.batch.is_time else None,
            pool=WAREHOUSE_POOL,
            metadata={"source_file": source.defs_file},
        )
        def _land_table(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            return self._materialize(context, warehouse, source, index, table)

        return _land_table

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceContext,
        index: int,
        table: SqlTable,
    ) -> dg.MaterializeResult:
        url = source.resolve(self.connection, "connection")
        engine = make_engine(url)
        try:
            reflected, cursor = self._inspect(source, engine, index, table)
            keys, bounds = self._slice(context)
            resource = slice_resource(
                engine=engine,
                url=url,
                table=reflected,
                cursor=cursor,
                bounds=bounds,
                backend=self._backend(url),
                chunk_size=self.chunk_size,
                primary_key=table.primary_key,
            )
            key_of = key_assigner(context, cursor.name) if self.batch.is_time else keys[0]
            try:
                report = land_arrow_slice(
                    warehouse=warehouse.get(),
                    dataset=source.name,
                    pipeline_name=f"{source.name}__{table.name}",
                    resource=resource,
                    batch_keys=keys,
                    key_of=(lambda _item: key_of) if isinstance(key_of, str) else key_of,
                )
            except BaseException as error:
                failure = read_failure(error)
                if failure is None:
                    raise
                raise SourceDatabaseError(
                    f"source {source.name!r}: reading table {table.name!r} failed: {failure}. "
                    "Nothing was landed"
                ) from None
        finally:
            engine.dispose()
        context.log.info(
            f"{source.name}.{table.name}: landed {report.rows} rows for {len(keys)} "
            f"partition(s) in {report.duration_seconds:.2f}s"
        )
        metadata = landing_metadata(report, table.name, bounds.lower, bounds.upper)
        return dg.MaterializeResult(metadata=metadata)

    def _slice(self, context: dg.AssetExecutionContext) -> tuple[list[str], SliceBounds]:
        """The run's partition keys and the cursor range they cover together."""
        if self.batch.is_time:
            window = context.partition_time_window
            return list(context.partition_keys), SliceBounds.window(window.start, window.end)
        cut = CursorSlice.from_key(context.partition_key)
        return [cut.key], SliceBounds.after(cut.lo, cut.hi)

    def _inspect(
        self, source: SourceContext, engine: sa.Engine, index: int, table: SqlTable
    ) -> tuple[sa.Table, CursorColumn]:
        """The reflected table and its cursor; a missing piece fails naming the field."""
        url = str(engine.url)
        try:
            reflected, cursor = inspect_table(
                engine, table.name, self.db_schema, table.cursor or self.cursor
            )
        except MissingInSource as missing:
            field = "name" if missing.what.startswith("table") else "cursor"
            raise source.error(
                f"tables[{index}].{field}",
                f"{missing.what} does not exist in {safe_url(url)}",
                f"use one of: {', '.join(missing.available) or '(none found)'}",
            ) from None
        except SourceDatabaseError as unreachable:
            raise SourceDatabaseError(
                f"source {source.name!r}: {unreachable}. Fix: check that the database is up and "
                f"that `connection` in {source.defs_file} points at it"
            ) from None
        assert cursor is not None
        allowed = ("timestamp_tz", "timestamp", "date") if self.batch.is_time else None
        if allowed and cursor.kind not in allowed:
            raise source.error(
                f"tables[{index}].cursor",
                f"column {cursor.name!r} is not a timestamp or date, so it cannot place rows "
                "in time windows",
                "pick a timestamp column, or use a size batch (`rows: N`)",
            )
        return reflected, cursor

    def _backend(self, url: str) -> Backend:
        if self.backend != "auto":
            return self.backend
        # ConnectorX reads SQLite's loosely typed columns poorly; PyArrow via SQLAlchemy is exact.
        return "pyarrow" if sa.make_url(url).get_backend_name() == "sqlite" else "connectorx"

    @contextmanager
    def _open_measure(self, source: SourceContext) -> Iterator[Measure]:
        url = source.resolve(self.connection, "connection")
        engine = make_engine(url)
        reflected: dict[str, tuple[sa.Table, CursorColumn]] = {}

        def measure(table_name: str, after: Any, threshold: int) -> Pending:
            if table_name not in reflected:
                index = next(i for i, t in enumerate(self.tables) if t.name == table_name)
                reflected[table_name] = self._inspect(source, engine, index, self.tables[index])
            table, cursor = reflected[table_name]
            return measure_pending(engine, table, cursor, after, threshold)

        try:
            yield measure
        finally:
            engine.dispose()
