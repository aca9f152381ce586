"""Dagster-free access to a source database: check a table, measure what is pending, read a slice.

Slices are predicates on one cursor column (`lo < cursor <= hi` for size batches,
`start <= cursor < end` for time windows), pushed into the SELECT that dlt's `sql_table`
builds, so the database does the filtering and an index on the cursor makes it cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from dlt.extract import DltResource
from dlt.sources.sql_database import sql_table
from dlt.sources.sql_database.helpers import (
    BaseTableLoader,
    ConnectorXTableLoader,
    TableLoader,
)

from ingestion_platform.core.database_urls import engine_url, shown_url
from ingestion_platform.core.pending import Pending
from ingestion_platform.sources.sql.connectors.sql_types import TypePlan, plan_types

# Both read Arrow batches: ConnectorX natively, PyArrow by converting SQLAlchemy rows.
Backend = Literal["connectorx", "pyarrow"]
CursorKind = Literal["integer", "timestamp_tz", "timestamp", "date", "other"]


class SourceDatabaseError(RuntimeError):
    """The source database cannot be reached."""


class MissingInSource(LookupError):
    """A declared table or column is not in the source database; `available` lists what is."""

    def __init__(self, what: str, available: list[str]) -> None:
        super().__init__(what)
        self.what = what
        self.available = available


@dataclass(frozen=True)
class CursorColumn:
    """The column(s) that place a row in a slice: the first non-NULL of `names`, in order.

    A fallback (`[updated_at, created_at]`) lets rows whose first cursor is NULL still
    belong to a slice; a row whose every cursor column is NULL belongs to none.
    """

    names: tuple[str, ...]
    kind: CursorKind

    @property
    def name(self) -> str:
        """How the cursor reads in messages and metadata."""
        return self.names[0] if len(self.names) == 1 else f"coalesce({', '.join(self.names)})"

    def expression(self, table: sa.Table) -> Any:
        """The cursor as a SQL expression on `table`."""
        columns = [table.c[name] for name in self.names]
        return columns[0] if len(columns) == 1 else sa.func.coalesce(*columns)

    def bound(self, value: datetime | int | None) -> Any:
        """A Python value comparable with this column in SQL."""
        if value is None or isinstance(value, int) or self.kind == "other":
            return value
        if self.kind == "timestamp_tz":
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if self.kind == "date":
            return value.date()
        return value.replace(tzinfo=None) if value.tzinfo else value


class MixedCursorTypes(TypeError):
    """Fallback cursor columns whose types differ, so their first non-NULL has no one type."""


MYSQL_DIALECTS = ("mysql", "mariadb")
UTC_OFFSET = "+00:00"


def make_engine(url: str) -> sa.Engine:
    """An engine whose MySQL/MariaDB sessions run in UTC (`utc_sessions`)."""
    return utc_sessions(sa.create_engine(engine_url(url), pool_pre_ping=True))


def utc_sessions(engine: sa.Engine) -> sa.Engine:
    """Set every new MySQL/MariaDB connection's session time zone to UTC.

    The server converts TIMESTAMP values, and the literals they are compared with, from and
    to the session's time zone, which defaults to the server's: on a server kept in local
    time every TIMESTAMP would land, and every window bound would be read, shifted by its
    offset (and the hour a DST change repeats would be ambiguous).
    """
    if engine.dialect.name in MYSQL_DIALECTS:

        def set_utc(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET time_zone = '{UTC_OFFSET}'")
            cursor.close()

        sa.event.listen(engine, "connect", set_utc)
    return engine


def _is_mariadb(dialect: sa.Dialect) -> bool:
    return bool(getattr(dialect, "is_mariadb", False))


def in_utc_session(sql: str, dialect: sa.Dialect) -> str:
    """One SELECT for a reader with its own connection (DuckDB's scanner, ConnectorX), run
    with the session time zone UTC, as `utc_sessions` sets it for SQLAlchemy's."""
    if dialect.name not in MYSQL_DIALECTS:
        return sql
    if _is_mariadb(dialect):
        return f"SET STATEMENT time_zone = '{UTC_OFFSET}' FOR {sql}"
    keyword, rest = sql.split(None, 1)  # MySQL 8: the hint follows SELECT
    return f"{keyword} /*+ SET_VAR(time_zone = '{UTC_OFFSET}') */ {rest}"


_UTC_NAMES = {"+00:00", "UTC", "Etc/UTC", "GMT"}


def unread_in_utc(engine: sa.Engine) -> str | None:
    """Why a reader with its own connection would not read a MySQL TIMESTAMP in UTC, or None.

    MySQL before 8.0 ignores the `SET_VAR` hint `in_utc_session` adds (a hint is a comment
    to it), so such a reader gets the server's own zone: harmless when that is UTC.
    """
    if engine.dialect.name not in MYSQL_DIALECTS or _is_mariadb(engine.dialect):
        return None
    with engine.connect() as connection:
        hinted = connection.exec_driver_sql(
            "SELECT /*+ SET_VAR(time_zone = '+01:00') */ @@session.time_zone"
        ).scalar_one()
        if hinted == "+01:00":
            return None
        zone, system = connection.exec_driver_sql(
            "SELECT @@global.time_zone, @@system_time_zone"
        ).one()
    if zone in _UTC_NAMES or (str(zone).upper() == "SYSTEM" and system in _UTC_NAMES):
        return None
    return (
        f"the server ignores the SET_VAR hint that makes a read use UTC (MySQL before 8.0) "
        f"and its time zone is {zone if str(zone).upper() != 'SYSTEM' else system}"
    )


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return shown_url(sa.make_url(url))
    except sa.exc.ArgumentError:
        return "<unparseable connection URL>"


def inspect_table(
    engine: sa.Engine, table: str, schema: str | None, cursor: list[str] | None
) -> tuple[sa.Table, CursorColumn | None]:
    """Reflect `table` and classify its cursor column(s); raises if any is missing."""
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            if not inspector.has_table(table, schema=schema):
                available = sorted(inspector.get_table_names(schema=schema))
                raise MissingInSource(f"table {table!r}", available)
            # dlt's sql_table finds the table in this MetaData under its key and reuses it.
            metadata = sa.MetaData(schema=schema)
            reflected = sa.Table(table, metadata, autoload_with=connection)
    except sa.exc.OperationalError as error:
        raise SourceDatabaseError(
            f"cannot connect to {shown_url(engine.url)}: {_first_line(error)}"
        ) from None
    if not cursor:
        return reflected, None
    for name in cursor:
        if name not in reflected.c:
            raise MissingInSource(f"column {name!r} of table {table!r}", sorted(reflected.c.keys()))
    kinds = {name: column_kind(reflected.c[name].type) for name in cursor}
    if len(set(kinds.values())) > 1:
        described = ", ".join(f"{name} ({kind})" for name, kind in kinds.items())
        raise MixedCursorTypes(f"cursor columns of table {table!r} differ in type: {described}")
    return reflected, CursorColumn(tuple(cursor), kinds[cursor[0]])


def count_null_cursor(engine: sa.Engine, table: sa.Table, cursor: CursorColumn) -> int:
    """Rows whose every cursor column is NULL: no slice can ever hold them.

    A cursor column the database declares NOT NULL answers without a query: on a large
    table without an index for it, the count would scan the table on every run.
    """
    if any(not table.c[name].nullable for name in cursor.names):
        return 0
    query = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(*(table.c[name].is_(None) for name in cursor.names))
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


@dataclass(frozen=True)
class BeforeStart:
    """Source rows whose cursor lies before the first time partition: no window holds them."""

    start: datetime
    rows: int
    earliest: Any = None


def count_before(
    engine: sa.Engine, table: sa.Table, cursor: CursorColumn, start: datetime
) -> BeforeStart:
    """How many rows have a cursor before `start`, and the earliest of them (an index on the
    cursor answers it from the index)."""
    column = cursor.expression(table)
    query = sa.select(sa.func.count(), sa.func.min(column)).where(column < cursor.bound(start))
    with engine.connect() as connection:
        rows, earliest = connection.execute(query).one()
    return BeforeStart(start, int(rows), earliest)


def list_tables(engine: sa.Engine, schema: str | None) -> list[str]:
    """The names of the tables (not views) in `schema`, or in the default schema."""
    try:
        with engine.connect() as connection:
            return sorted(sa.inspect(connection).get_table_names(schema=schema))
    except sa.exc.OperationalError as error:
        raise SourceDatabaseError(
            f"cannot connect to {shown_url(engine.url)}: {_first_line(error)}"
        ) from None


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def column_kind(column_type: sa.types.TypeEngine[Any]) -> CursorKind:
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.DateTime):
        return "timestamp_tz" if column_type.timezone else "timestamp"
    if isinstance(column_type, sa.Date):
        return "date"
    return "other"


def measure_pending(
    engine: sa.Engine, table: sa.Table, cursor: CursorColumn, after: Any, threshold: int
) -> Pending:
    """Count rows past `after` (up to `threshold`) and find where a batch of `threshold` ends."""
    column = cursor.expression(table)
    # NULL cursors are never pending: no slice can hold them (count_null_cursor reports them).
    newer = sa.select(column.label("cursor")).select_from(table).where(column.is_not(None))
    if after is not None:
        newer = newer.where(column > cursor.bound(after))
    capped = newer.order_by(column).limit(threshold).subquery()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(capped)).scalar_one()
        if rows == 0:
            return Pending(0, None, None)
        if rows >= threshold:
            end = connection.execute(sa.select(sa.func.max(capped.c.cursor))).scalar()
            return Pending(rows, _as_bound(end), _as_bound(end))
        all_newer = newer.subquery()
        newest = connection.execute(sa.select(sa.func.max(all_newer.c.cursor))).scalar()
        return Pending(rows, None, _as_bound(newest))


def _as_bound(value: Any) -> Any:
    """Partition keys hold ints and datetimes; a date cursor becomes midnight of that day."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, datetime.min.time())
    return value


@dataclass(frozen=True)
class SliceBounds:
    """Where a slice starts and ends on the cursor column; None means open-ended."""

    lower: Any
    upper: Any
    lower_inclusive: bool
    upper_inclusive: bool

    @classmethod
    def window(cls, start: datetime, end: datetime) -> SliceBounds:
        """A time window: `start <= cursor < end`."""
        return cls(start, end, lower_inclusive=True, upper_inclusive=False)

    @classmethod
    def after(cls, lo: Any, hi: Any) -> SliceBounds:
        """A cursor range: `lo < cursor <= hi`."""
        return cls(lo, hi, lower_inclusive=False, upper_inclusive=True)


def slice_resource(
    *,
    engine: sa.Engine,
    url: str,
    table: sa.Table,
    cursor: CursorColumn,
    bounds: SliceBounds,
    backend: Backend,
    chunk_size: int,
    primary_key: list[str] | None,
    tinyint1_as_boolean: bool = False,
    plan: TypePlan | None = None,
) -> DltResource:
    """A dlt resource yielding the rows of `table` within `bounds` as Arrow batches.

    `table` is the one `inspect_table` reflected; dlt reuses it instead of reflecting again.
    Columns the backend would read unfaithfully are read as `plan_types` decides (which may
    switch ConnectorX to pyarrow for this table), or as `plan` says if given; MySQL
    TINYINT(1) lands as BOOLEAN if asked.
    """

    def restrict(query: Any, source_table: sa.Table) -> Any:
        return bounded(query, source_table, cursor, bounds)

    if plan is None:
        plan = plan_types(table, engine.dialect, backend, tinyint1_as_boolean=tinyint1_as_boolean)
    backend = plan.backend
    backend_kwargs: dict[str, Any] = {}
    loader: type[BaseTableLoader] = TableLoader
    if backend == "connectorx":
        # Stream Arrow record batches so memory stays bounded by chunk_size, not table size.
        backend_kwargs = {"return_type": "arrow_stream", "batch_size": chunk_size}
        backend_kwargs["conn"] = _connectorx_url(url)
        loader = _ConnectorXLoader
    resource = sql_table(
        credentials=engine,
        table=table.name,
        metadata=table.metadata,
        backend=backend,
        chunk_size=chunk_size,
        backend_kwargs=backend_kwargs,
        query_adapter_callback=restrict,
        reflection_level="full_with_precision",
        primary_key=primary_key,
        table_loader_class=loader if plan.is_empty else _planned(loader, plan),
    )
    if plan_hints := plan.hints():
        resource.apply_hints(columns=plan_hints)
    return resource


def bounded(query: Any, table: sa.Table, cursor: CursorColumn, bounds: SliceBounds) -> Any:
    """`query` restricted to the rows of `table` within `bounds` on `cursor`."""
    column = cursor.expression(table)
    if bounds.lower is not None:
        bound = cursor.bound(bounds.lower)
        query = query.where(column >= bound if bounds.lower_inclusive else column > bound)
    if bounds.upper is not None:
        bound = cursor.bound(bounds.upper)
        query = query.where(column <= bound if bounds.upper_inclusive else column < bound)
    return query


class SourceReadError(RuntimeError):
    """The database failed part-way through reading a slice; the message is the database's."""


class _ConnectorXLoader(ConnectorXTableLoader):
    """dlt's ConnectorX loader, with database errors raised as exceptions, not Rust panics.

    ConnectorX reports a query that fails in the database as a `PanicException`, which is a
    BaseException: dlt's resource iterator only cleans up after an `Exception`, so a panic
    would leave dlt's injected contexts behind in the process (stale state for whatever dlt
    runs next in it, such as a sensor in the long-lived code server).
    """

    def load_rows(self, backend_kwargs: dict[str, Any] | None = None) -> Iterator[Any]:
        try:
            yield from super().load_rows(backend_kwargs)
        except BaseException as error:
            if type(error).__name__ != "PanicException":
                raise
            raise SourceReadError(_database_message(str(error))) from None

    def compile_query(self, query: Any) -> str:
        # ConnectorX opens its own connections, which `utc_sessions` does not reach.
        return in_utc_session(super().compile_query(query), self.engine.dialect)


def _planned(base: type[BaseTableLoader], plan: TypePlan) -> type[BaseTableLoader]:
    """`base`, selecting and converting the columns `plan` reads its own way."""

    class PlannedLoader(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The resource's hints say what dlt creates; these say how rows become Arrow.
            self.columns = plan.read_hints(self.columns)

        def make_query(self) -> Any:
            return plan.rewrite(super().make_query())

        def load_rows(self, backend_kwargs: dict[str, Any] | None = None) -> Iterator[Any]:
            if plan.unreadable:
                raise SourceReadError(plan.unreadable)
            for item in super().load_rows(backend_kwargs):
                try:
                    yield plan.convert(item)
                except ValueError as error:
                    raise SourceReadError(str(error)) from None

    return PlannedLoader


def _database_message(panic: str) -> str:
    """The driver error's `message` from the debug dump ConnectorX panics with."""
    found = re.search(r'message: "((?:[^"\\]|\\.)*)"', panic)
    return found.group(1) if found else panic


def read_failure(error: BaseException) -> SourceReadError | None:
    """The SourceReadError behind `error` (dlt wraps what a resource raises), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SourceReadError):
            return seen
        if isinstance(seen, sa.exc.DBAPIError):  # the pyarrow backend's query failed
            return SourceReadError(_first_line(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _connectorx_url(url: str) -> str:
    parsed = sa.make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)
