"""Relational database tables (PostgreSQL, MySQL/MariaDB, SQLite) landed slice by slice.

One asset per table. A time batch reads the window `start <= cursor < end` and runs on a
schedule; a size batch reads `lo < cursor <= hi` and a sensor cuts a slice whenever that
many new rows have been recorded. PostgreSQL and MySQL/MariaDB slices are read by DuckDB's
own scanner inside the landing transaction (scanner_landing.py); SQLite, and any table with
a column the scanner cannot land as ConnectorX does (named in the run's log), go through
dlt's `sql_table` with an Arrow backend (landing.py), memory bounded by `chunk_size`.

Tables are listed in `tables:`, or left out to take every table of `db_schema`. Asset keys
must be known when definitions load, and loading must not need the database, so the
schema's table list is Dagster component state: `dg utils refresh-defs-state` reads it from
the database and stores it (in `defs/.local_defs_state/`), and definitions load from there.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import sqlalchemy as sa
from dagster.components.utils.defs_state import (
    DefsStateConfig,
    DefsStateConfigArgs,
    ResolvedDefsStateConfig,
)
from dagster_shared.serdes.objects.models.defs_state_info import DefsStateManagementType
from pydantic import PrivateAttr
from sqlalchemy.dialects import mysql

from ingestion_platform.core.batching import CheckedBatch, scheduled_definitions
from ingestion_platform.core.bounded import PositiveInt
from ingestion_platform.core.column_names import (
    clashing_names,
    describe_clash,
    describe_taken,
    taken_names,
)
from ingestion_platform.core.database_urls import shown_url
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health
from ingestion_platform.core.lag import lag_defs
from ingestion_platform.core.pending import Pending
from ingestion_platform.core.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.core.time_keys import key_assigner
from ingestion_platform.core.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    WAREHOUSE_POOL,
    WarehouseResource,
)
from ingestion_platform.sources.api.landing import BatchKeyOf
from ingestion_platform.sources.sql.connectors.sql_database import (
    Backend,
    BeforeStart,
    CursorColumn,
    MissingInSource,
    MixedCursorTypes,
    SourceDatabaseError,
    column_kind,
    count_before,
    count_null_cursor,
    inspect_table,
    list_tables,
    make_engine,
    measure_pending,
    read_failure,
    safe_url,
    slice_resource,
    unread_in_utc,
)
from ingestion_platform.sources.sql.lag import sql_lag_measure
from ingestion_platform.sources.sql.landing import land_arrow_slice, warehouse_table_name
from ingestion_platform.sources.sql.reader import land_scanned, scanner_plan
from ingestion_platform.sources.sql.run import report_landing, run_slice, window_starts
from ingestion_platform.sources.sql.scanner_landing import ScanSlice

# A cursor column, or a list read as its first non-NULL (`[updated_at, created_at]`).
CursorSetting = str | list[str]


class SqlTable(dg.Model):
    """One table to land: its name, the column(s) that order new rows, and its primary key."""

    name: str
    cursor: CursorSetting | None = None
    primary_key: list[str] | None = None


def _fallback_column(table: sa.Table, cursor: CursorColumn) -> str | None:
    """A column of the table that could follow the cursor in a fallback list: one of the
    same kind, NOT NULL ones first (they place every row), for the NULL-cursor fix."""
    candidates = [
        column
        for column in table.columns
        if column.name not in cursor.names and column_kind(column.type) == cursor.kind
    ]
    candidates.sort(key=lambda column: column.nullable)
    return candidates[0].name if candidates else None


def _cursor_names(setting: CursorSetting | None) -> list[str] | None:
    if setting is None:
        return None
    return [setting] if isinstance(setting, str) else list(setting)


class SqlDatabaseSource(dg.StateBackedComponent, dg.Model, dg.Resolvable):
    """Tables of a relational database, landed in DuckDB one exact slice at a time."""

    connection: Setting
    batch: CheckedBatch
    tables: list[SqlTable] | None = None
    db_schema: str | None = None
    cursor: CursorSetting | None = None
    # auto: DuckDB's scanner for PostgreSQL and MySQL/MariaDB (ConnectorX for a table it
    # cannot land exactly), pyarrow for SQLite; connectorx or pyarrow: the Arrow path only.
    backend: Literal["auto", "connectorx", "pyarrow"] = "auto"
    chunk_size: PositiveInt = 100_000
    health: HealthSpec = HealthSpec()
    # MySQL's BOOLEAN is TINYINT(1); say so to land such columns as DuckDB BOOLEAN.
    tinyint1_as_boolean: bool = False
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    # Only refreshed on request (`dg utils refresh-defs-state`), never while definitions load.
    defs_state: ResolvedDefsStateConfig = DefsStateConfigArgs(
        management_type=DefsStateManagementType.LOCAL_FILESYSTEM, refresh_if_dev=False
    )
    _source: SourceContext | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> "SqlDatabaseSource":
        # StateBackedComponent.load registers the state key before the component knows its
        # source; this does the same once it does, and only for sources that need state.
        component = super(dg.StateBackedComponent, cls).load(attributes, context)
        component._source = SourceContext.from_load_context(context)
        if component.tables is None:
            context.component_tree.mark_component_defs_state_key(
                defs_state_key=component.defs_state_config.key, loc=context.component_loc
            )
        return component

    @property
    def defs_state_config(self) -> DefsStateConfig:
        # One table list per source folder; the source name is also its warehouse schema.
        name = self._source.name if self._source else "unnamed"
        return DefsStateConfig.from_args(self.defs_state, default_key=f"SqlDatabaseSource.{name}")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if self.tables is not None:  # listed tables need no state
            return self.build_defs_from_state(context, state_path=None)
        return super().build_defs(context)

    def write_state_to_path(self, state_path: Path) -> None:
        """Store the table names to build assets for: the declared ones, or the schema's."""
        if self.tables is not None:
            names = [table.name for table in self.tables]
        else:
            source = self._source
            assert source is not None, "state is refreshed for loaded components only"
            url = source.resolve(self.connection, "connection")
            engine = make_engine(url)
            try:
                names = list_tables(engine, self.db_schema)
            except SourceDatabaseError as unreachable:
                raise self._unreachable(source, unreachable) from None
            finally:
                engine.dispose()
            if not names:
                raise source.error(
                    "db_schema",
                    f"schema {self.db_schema or '(default)'} of {safe_url(url)} has no tables",
                    "point `db_schema` at a schema with tables, or list `tables:`",
                )
        state_path.write_text(json.dumps({"tables": names}))

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        tables = self.tables if self.tables is not None else self._schema_tables(source, state_path)
        if tables is None:
            return dg.Definitions()
        self._check(source, tables)
        partitions = self.batch.partitions_def
        assets = [
            self._table_asset(source, table, partitions(f"{source.name}__{table.name}"))
            for table in tables
        ]
        running = self.automation == "running"
        lag = self._lag_defs(source, tables, assets)
        if self.batch.is_time:
            return dg.Definitions.merge(scheduled_definitions(source.name, assets, running), lag)
        streams = [
            SizeStream(table.name, [asset.key], asset.partitions_def)  # type: ignore[arg-type]
            for table, asset in zip(tables, assets, strict=True)
        ]
        sensor = build_size_sensor(
            name=f"{source.name}__size_sensor",
            spec=self.batch,
            streams=streams,
            open_measure=lambda: self._open_measure(source, tables),
            minimum_interval_seconds=self.sensor_interval_seconds,
            description=f"Cuts a partition of {source.name} per {self.batch.size_threshold} "
            "new rows of each table.",
            running=running,
        )
        return dg.Definitions.merge(dg.Definitions(assets=assets, sensors=[sensor]), lag)

    def _lag_defs(
        self, source: SourceContext, tables: list[SqlTable], assets: list[dg.AssetsDefinition]
    ) -> dg.Definitions:
        """The source_lag check of each table: rows at the source no partition holds yet."""
        measures = {
            asset.key: sql_lag_measure(
                source=source,
                connection=self.connection,
                table=table.name,
                db_schema=self.db_schema,
                cursor=_cursor_names(table.cursor or self.cursor) or [],
                asset_key=asset.key,
                partitions_def=asset.partitions_def,  # type: ignore[arg-type]
            )
            for table, asset in zip(tables, assets, strict=True)
        }
        return lag_defs(
            source=source.name,
            measures=measures,
            batch=self.batch,
            health=self.health,
            sensor_interval_seconds=self.sensor_interval_seconds,
        )

    def _schema_tables(
        self, source: SourceContext, state_path: Path | None
    ) -> list[SqlTable] | None:
        """The schema's tables as last stored by `dg utils refresh-defs-state`, if ever."""
        if state_path is None or not state_path.exists():
            dg.get_dagster_logger().warning(
                f"{source.defs_file}: tables: not listed, and the tables of schema "
                f"{self.db_schema or '(default)'} have not been read yet, so source "
                f"{source.name!r} has no assets. Fix: run `dg utils refresh-defs-state` with "
                "the database reachable, or list `tables:`."
            )
            return None
        return [SqlTable(name=name) for name in json.loads(state_path.read_text())["tables"]]

    def _check(self, source: SourceContext, tables: list[SqlTable]) -> None:
        if not tables:
            raise source.error("tables", "no tables declared", "list at least one table")
        seen: set[str] = set()
        for index, table in enumerate(tables):
            if table.name in seen:
                raise source.error(
                    f"tables[{index}].name",
                    f"table {table.name!r} is declared twice",
                    "declare each table once",
                )
            seen.add(table.name)
            if table.cursor == [] or self.cursor == []:
                raise source.error(
                    f"tables[{index}].cursor" if table.cursor == [] else "cursor",
                    "an empty list names no cursor column",
                    "write one column (`cursor: updated_at`) or a fallback list "
                    "(`cursor: [updated_at, created_at]`)",
                )
            if not (table.cursor or self.cursor):
                raise source.error(
                    f"tables[{index}].cursor" if self.tables is not None else "cursor",
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

    def _table_asset(
        self,
        source: SourceContext,
        table: SqlTable,
        partitions_def: dg.PartitionsDefinition,
    ) -> dg.AssetsDefinition:
        key = dg.AssetKey([source.name, table.name])

        @dg.asset(
            key=key,
            group_name=source.name,
            kinds={"sql", "dlt", "duckdb"},
            description=self._description(table),
            **asset_health(  # type: ignore[arg-type]
                key, self.batch, self.health, self.sensor_interval_seconds
            ),
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run() if self.batch.is_time else None,
            pool=WAREHOUSE_POOL,
            metadata={"source_file": source.defs_file},
        )
        def _land_table(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands the partition's slice in one transaction. (Not a docstring: the description
            # is set above, and Dagster would parse a docstring again for every asset.)
            return self._materialize(context, warehouse, source, table)

        return _land_table

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceContext,
        table: SqlTable,
    ) -> dg.MaterializeResult:
        url = source.resolve(self.connection, "connection")
        engine = make_engine(url)
        try:
            reflected, cursor = self._inspect(source, engine, table)
            self._refuse_shifted_timestamps(source, engine, reflected)
            keys, bounds = run_slice(context, self.batch.is_time)
            scan = (
                scanner_plan(
                    context,
                    table.name,
                    engine,
                    url,
                    reflected,
                    tinyint1_as_boolean=self.tinyint1_as_boolean,
                )
                if self.backend == "auto"
                else None
            )
            resource = slice_resource(
                engine=engine,
                url=url,
                table=reflected,
                cursor=cursor,
                bounds=bounds,
                backend=self._backend(url),
                chunk_size=self.chunk_size,
                primary_key=table.primary_key,
                tinyint1_as_boolean=self.tinyint1_as_boolean,
                plan=scan[1] if scan else None,
            )
            try:
                if scan:
                    read = ScanSlice(
                        plan=scan[0],
                        engine=engine,
                        cursor=cursor,
                        bounds=bounds,
                        batch_keys=keys,
                        window_starts=window_starts(context, keys),
                        tinyint1_as_boolean=self.tinyint1_as_boolean,
                    )
                    report = land_scanned(
                        context,
                        warehouse.get(),
                        source,
                        table.name,
                        resource,
                        scan[1],
                        read,
                        table.primary_key,
                    )
                else:
                    report = land_arrow_slice(
                        warehouse=warehouse.get(),
                        dataset=source.name,
                        pipeline_name=f"{source.name}__{table.name}",
                        resource=resource,
                        batch_keys=keys,
                        key_of=self._key_of(context, cursor, keys),
                        primary_key=table.primary_key,
                    )
            except Exception as error:
                failure = read_failure(error)
                if failure is None:
                    raise
                raise SourceDatabaseError(
                    f"source {source.name!r}: reading table {table.name!r} failed: {failure}. "
                    "Nothing was landed"
                ) from None
            # Counted after the landing, so a row that gained a cursor meanwhile is not counted
            # as unseen although it was landed.
            unseen = count_null_cursor(engine, reflected, cursor)
            early = self._before_start(context, engine, reflected, cursor)
        finally:
            engine.dispose()
        landed = warehouse.get().count_batches(source.name, warehouse_table_name(table.name), keys)
        return report_landing(
            context,
            source,
            table.name,
            report,
            keys,
            bounds,
            cursor.name,
            unseen,
            landed,
            fallback=_fallback_column(reflected, cursor) if unseen else None,
            before_start=early,
        )

    def _before_start(
        self,
        context: dg.AssetExecutionContext,
        engine: sa.Engine,
        reflected: sa.Table,
        cursor: CursorColumn,
    ) -> BeforeStart | None:
        """Rows older than the first time window, which no partition will ever land."""
        partitions_def = context.assets_def.partitions_def
        if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            return None
        return count_before(engine, reflected, cursor, partitions_def.start)

    def _key_of(
        self, context: dg.AssetExecutionContext, cursor: CursorColumn, keys: list[str]
    ) -> BatchKeyOf:
        if self.batch.is_time:
            return key_assigner(context, cursor.names)
        return lambda _batch: keys[0]

    def _description(self, table: SqlTable) -> str:
        """What the asset holds and where it comes from, without secrets."""
        if isinstance(self.connection, str):
            where = f"the database {safe_url(self.connection)}"
        else:
            where = f"the database named by ${self.connection.env}"
        schema = f", schema {self.db_schema}" if self.db_schema else ""
        cursor = _cursor_names(table.cursor or self.cursor) or ["(none)"]
        if self.batch.is_time:
            window = self.batch.every or f"window of the cron {self.batch.cron!r}"
            boundary = f"{window} of {cursor[0]}"
        else:
            boundary = f"{self.batch.size_threshold:,} new rows by {cursor[0]}"
        keyed = f" One current row per {', '.join(table.primary_key)}." if table.primary_key else ""
        return (
            f"Table {table.name} of {where}{schema} (SQL database source), one partition per "
            f"{boundary}.{keyed}"
        )

    def _inspect(
        self, source: SourceContext, engine: sa.Engine, table: SqlTable
    ) -> tuple[sa.Table, CursorColumn]:
        """The reflected table and its cursor; a missing piece fails naming the field."""
        try:
            reflected, cursor = inspect_table(
                engine, table.name, self.db_schema, _cursor_names(table.cursor or self.cursor)
            )
        except MixedCursorTypes as mixed:
            raise source.error(
                self._field(table.name, "cursor"),
                str(mixed),
                "list fallback columns of one type (e.g. two timestamps)",
            ) from None
        except MissingInSource as missing:
            field = "name" if missing.what.startswith("table") else "cursor"
            raise source.error(
                self._field(table.name, field),
                f"{missing.what} does not exist in {shown_url(engine.url)}",
                f"use one of: {', '.join(missing.available) or '(none found)'}",
            ) from None
        except SourceDatabaseError as unreachable:
            raise self._unreachable(source, unreachable) from None
        assert cursor is not None
        clashes = clashing_names(column.name for column in reflected.columns)
        if clashes:
            raise source.error(
                self._field(table.name, "name"),
                f"table {table.name!r}: columns {describe_clash(clashes)} "
                "(the warehouse's snake_case names)",
                "read the table through a view that renames all but one of them",
            )
        taken = taken_names(
            (c.name for c in reflected.columns), (BATCH_KEY_COLUMN, LOADED_AT_COLUMN)
        )
        if taken:
            raise source.error(
                self._field(table.name, "name"),
                f"table {table.name!r}: column {describe_taken(taken)} (every landing writes "
                f"{BATCH_KEY_COLUMN} and {LOADED_AT_COLUMN})",
                "read the table through a view that renames it",
            )
        allowed = ("timestamp_tz", "timestamp", "date") if self.batch.is_time else None
        if allowed and cursor.kind not in allowed:
            raise source.error(
                self._field(table.name, "cursor"),
                f"cursor {cursor.name!r} is not a timestamp or date, so it cannot place rows "
                "in time windows",
                "pick a timestamp column, or use a size batch (`rows: N`)",
            )
        return reflected, cursor

    def _field(self, table_name: str, attribute: str) -> str:
        """Where in defs.yaml a table's setting comes from, for error messages."""
        for index, table in enumerate(self.tables or []):
            if table.name == table_name and (attribute == "name" or table.cursor):
                return f"tables[{index}].{attribute}"
        return "db_schema" if attribute == "name" else "cursor"

    def _refuse_shifted_timestamps(
        self, source: SourceContext, engine: sa.Engine, reflected: sa.Table
    ) -> None:
        """Fail before reading when a reader with its own connection would get a MySQL
        TIMESTAMP in the server's zone instead of UTC (MySQL 5.7 off UTC)."""
        stamps = [c.name for c in reflected.columns if isinstance(c.type, mysql.TIMESTAMP)]
        if not stamps or self.backend == "pyarrow":
            return  # the pyarrow backend reads through SQLAlchemy's sessions, set to UTC
        reason = unread_in_utc(engine)
        if reason is not None:
            raise SourceDatabaseError(
                f"source {source.name!r}: table {reflected.name!r} has TIMESTAMP column(s) "
                f"{', '.join(stamps)}, but {reason}, so they would land shifted from UTC. "
                "Nothing was landed. Fix: set the server's time_zone to '+00:00' "
                f"(default-time-zone), or `backend: pyarrow` in {source.defs_file}"
            )

    @staticmethod
    def _unreachable(source: SourceContext, error: SourceDatabaseError) -> SourceDatabaseError:
        return SourceDatabaseError(
            f"source {source.name!r}: {error}. Fix: check that the database is up and "
            f"that `connection` in {source.defs_file} points at it"
        )

    def _backend(self, url: str) -> Backend:
        if self.backend != "auto":
            return self.backend
        # ConnectorX reads SQLite's loosely typed columns poorly; PyArrow via SQLAlchemy is exact.
        return "pyarrow" if sa.make_url(url).get_backend_name() == "sqlite" else "connectorx"

    @contextmanager
    def _open_measure(self, source: SourceContext, tables: list[SqlTable]) -> Iterator[Measure]:
        url = source.resolve(self.connection, "connection")
        engine = make_engine(url)
        reflected: dict[str, tuple[sa.Table, CursorColumn]] = {}

        def measure(table_name: str, after: Any, threshold: int) -> Pending:
            if table_name not in reflected:
                table = next(t for t in tables if t.name == table_name)
                reflected[table_name] = self._inspect(source, engine, table)
            table, cursor = reflected[table_name]
            return measure_pending(engine, table, cursor, after, threshold)

        try:
            yield measure
        finally:
            engine.dispose()
