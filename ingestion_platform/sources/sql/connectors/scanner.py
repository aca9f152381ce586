"""Dagster-free reads of PostgreSQL and MySQL/MariaDB slices through DuckDB's own scanners.

DuckDB's postgres and mysql extensions read a source straight into DuckDB's vectors, with
no Arrow or Python in between: at 2M rows a PostgreSQL slice is read and written in about
half of ConnectorX's time (bench/README.md). A slice is read one of two ways:

- **query**: `postgres_query()` / `mysql_query()` run the bounded SELECT that the ConnectorX
  path would run, built by SQLAlchemy with the bounds inlined as literals, so the cursor's
  WHERE (and any index on it) is the server's, and columns that need the server's text
  form (intervals, money, decimals wider than DuckDB's) are cast there as today.
- **table** (PostgreSQL only): the attached table with the bounds as DuckDB filters, which
  the scanner pushes into each of its parallel `COPY … WHERE ctid BETWEEN …` reads. Every
  such read scans its share of the heap, so it is chosen only where PostgreSQL's own plan
  for the slice is a sequential scan of the table anyway (a large slice), and only for
  tables the scanner reads natively.

A table is read this way only if every column lands exactly as the ConnectorX path lands
it (test_sql_scanner.py compares the two value by value); otherwise `plan_scan` says why,
and the caller reads the table with ConnectorX, naming that reason in the run's log.

The password never enters SQL text that could reach a message: it goes into a DuckDB
secret, the ATTACH names only the secret, and errors are scrubbed of it all the same.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ingestion_platform.core.duckdb_extensions import (
    SCANNER_EXTENSIONS,
    install_packaged_extensions,
)
from ingestion_platform.core.sql_quoting import quote_identifier, quote_literal
from ingestion_platform.sources.sql.connectors.sql_database import (
    CursorColumn,
    SliceBounds,
    SourceReadError,
    bounded,
    in_utc_session,
)
from ingestion_platform.sources.sql.connectors.sql_types import (
    TypePlan,
    list_element,
    type_name,
)

ScannerKind = Literal["postgres", "mysql"]
ScanMode = Literal["query", "table"]
Rewrite = Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]
_KINDS: dict[str, ScannerKind] = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


class ScannerUnavailable(RuntimeError):
    """The scanner cannot attach the source (refused, unreachable); the message has no secret."""


@dataclass(frozen=True)
class ScannerSource:
    """Where the scanner connects: the URL's parts, the password kept out of every SQL text."""

    kind: ScannerKind
    host: str | None
    port: int | None
    database: str | None
    user: str | None
    password: str | None = field(repr=False)  # never in a message, even a debug one
    # PostgreSQL connection options from the URL's query (sslmode=…), passed to libpq.
    options: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_url(cls, url: str) -> ScannerSource | str:
        """The source, or why the scanner cannot connect the way the URL says."""
        parsed = sa.make_url(url)
        kind = _KINDS.get(parsed.get_backend_name())
        if kind is None:
            return f"DuckDB has no scanner for {parsed.get_backend_name()} databases"
        query = dict(parsed.query)
        password = parsed.password or query.pop("password", None)
        options = tuple((key, str(value)) for key, value in query.items())
        if options and kind == "mysql":
            names = ", ".join(key for key, _ in options)
            return f"the connection URL sets {names}, which the MySQL scanner is not given"
        return cls(
            kind=kind,
            host=parsed.host,
            port=parsed.port,
            database=parsed.database,
            user=parsed.username,
            password=str(password) if password else None,
            options=options,
        )

    def scrub(self, text: str) -> str:
        """`text` with the password masked: DuckDB's messages may quote what it was given."""
        return text.replace(self.password, "***") if self.password else text


@dataclass(frozen=True)
class ScanColumn:
    """One column of the slice: its source name, its warehouse name, and how it is read."""

    source_name: str
    name: str
    # DuckDB's expression of the scanned column (`{}`), where ConnectorX reads it otherwise.
    expression: str = "{}"

    def select(self) -> str:
        column = self.expression.format(quote_identifier(self.source_name))
        return f"{column} as {quote_identifier(self.name)}"


@dataclass(frozen=True)
class ScanPlan:
    """How a table's slices are read through the scanner."""

    source: ScannerSource
    columns: tuple[ScanColumn, ...]
    # Server-side expressions for columns read as the server's text (query mode only).
    rewrites: dict[str, Rewrite]
    # The table's own name and schema at the source.
    table: sa.Table
    schema: str | None

    @property
    def native(self) -> bool:
        """Whether every column is read as the scanner types it (table mode possible)."""
        return not self.rewrites

    def sample_types(self, sample: pa.Schema) -> pa.Schema:
        """The scanner's Arrow types of a sample, as ConnectorX types a first batch: dlt
        creates the warehouse columns from them. ConnectorX's batches carry PostgreSQL's
        integers as 64-bit ones (dlt then makes BIGINT, where the scanner's int32 would
        make INTEGER) and MySQL's YEAR as a 16-bit one."""
        years = {c.name for c in self.table.columns if isinstance(c.type, mysql.YEAR)}
        fields = []
        for sampled in sample:
            if self.source.kind == "postgres" and pa.types.is_signed_integer(sampled.type):
                sampled = sampled.with_type(pa.int64())
            elif sampled.name in years:
                sampled = sampled.with_type(pa.int16())
            fields.append(sampled)
        return pa.schema(fields, sample.metadata)

    def decoding(self, scanned: dict[str, str]) -> ScanPlan:
        """This plan with each text column the scanner typed as bytes (`scanned`: column →
        DuckDB type) decoded: mysql_query types text of a binary collation (JSON's
        utf8mb4_bin) as BLOB, where ConnectorX reads text."""
        binary = (sa.LargeBinary, sa.types._Binary)
        texts = {
            c.name
            for c in self.table.columns
            if isinstance(c.type, sa.String | sa.JSON) and not isinstance(c.type, binary)
        }
        columns = tuple(
            ScanColumn(c.source_name, c.name, f"decode({c.expression})")
            if c.source_name in texts and scanned.get(c.name) == "BLOB"
            else c
            for c in self.columns
        )
        return ScanPlan(self.source, columns, self.rewrites, self.table, self.schema)

    def renamed(self, names: dict[str, str]) -> ScanPlan:
        """This plan landing into the warehouse columns `names` (source name → dlt's name)."""
        columns = tuple(
            ScanColumn(c.source_name, names.get(c.source_name, c.name), c.expression)
            for c in self.columns
        )
        return ScanPlan(self.source, columns, self.rewrites, self.table, self.schema)


@dataclass(frozen=True)
class SliceScan:
    """One slice's read: the DuckDB relation to select from, with its filter if any."""

    plan: ScanPlan
    mode: ScanMode
    relation: str
    where: str = ""
    parameters: tuple[Any, ...] = ()

    def select_sql(self, extra: str = "") -> str:
        """The DuckDB SELECT of the slice's columns (plus `extra` select items)."""
        items = ", ".join([c.select() for c in self.plan.columns] + ([extra] if extra else []))
        where = f" where {self.where}" if self.where else ""
        return f"select {items} from {self.relation}{where}"  # noqa: S608


def plan_scan(
    table: sa.Table,
    dialect: sa.Dialect,
    url: str,
    type_plan: TypePlan,
) -> ScanPlan | str:
    """How to read `table` through the scanner, or why it must be read with ConnectorX.

    `type_plan` is the ConnectorX path's plan for the table: its text rewrites are reused so
    that both paths send the server the same SELECT and land the same values.
    """
    source = ScannerSource.from_url(url)
    if isinstance(source, str):
        return source
    if type_plan.unreadable:
        return type_plan.unreadable.split(". Fix:")[0]
    if type_plan.backend != "connectorx":
        return "a column ConnectorX cannot read (see the warning above)"
    reads = {read.name: read for read in type_plan.columns}
    columns: list[ScanColumn] = []
    rewrites: dict[str, Rewrite] = {}
    for column in table.columns:
        read = reads.get(column.name)
        if read is not None and read.select is not None and not read.scanner_reads:
            rewrites[column.name] = read.select
            columns.append(ScanColumn(column.name, column.name))
            continue
        landed = _expression(column.type, source.kind)
        if landed is None:
            sql_type = type_name(column.type, dialect)
            return f"column {column.name!r} is {sql_type}, {_why_not(column.type, source.kind)}"
        columns.append(ScanColumn(column.name, column.name, landed))
    return ScanPlan(source, tuple(columns), rewrites, table, table.schema)


def _expression(column_type: sa.types.TypeEngine[Any], kind: ScannerKind) -> str | None:
    """DuckDB's expression landing a scanned column as ConnectorX does; None if none does.

    Only types test_sql_scanner.py compares value by value are listed.
    """
    if isinstance(column_type, sa.JSON):
        return "{}" if kind == "mysql" else None
    if isinstance(column_type, sa.Float):
        return "{}"
    if kind == "postgres" and isinstance(column_type, sa.CHAR):
        # The scanner drops the blanks that pad a CHAR(n); ConnectorX keeps them.
        return f"rpad({{}}, {int(column_type.length or 1)}, ' ')"
    if isinstance(column_type, sa.ARRAY):
        return "{}" if list_element(column_type.item_type) is not None else None
    if isinstance(column_type, sa.Enum):
        return "{}" if kind == "mysql" else None
    native: tuple[type[Any], ...] = (
        sa.Integer,
        sa.Numeric,
        sa.String,
        sa.Boolean,
        sa.Date,
        sa.DateTime,
        sa.Time,
        sa.LargeBinary,
        sa.types._Binary,
        sa.Uuid,
    )
    if kind == "mysql":
        # The scanner is told to read BIT(1) as bytes, as ConnectorX does.
        native += (mysql.YEAR, mysql.SET, mysql.BIT)
    return "{}" if isinstance(column_type, native) else None


def _why_not(column_type: sa.types.TypeEngine[Any], kind: ScannerKind) -> str:
    """Why a column type stays on the ConnectorX path, for the run's log."""
    if isinstance(column_type, sa.ARRAY):
        return "an array the ConnectorX path lands as JSON text, where the scanner lands a list"
    if isinstance(column_type, sa.JSON):
        return (
            "which ConnectorX lands re-serialised (minified, numbers as 64-bit floats), "
            "where the scanner lands PostgreSQL's own text"
        )
    if isinstance(column_type, sa.Enum):
        return "an enumerated type the scanner would land as a DuckDB ENUM"
    return "a type the scanner path is not checked to land as the ConnectorX path does"


def _as_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(column, sa.String)


def slice_scan(
    plan: ScanPlan,
    engine: sa.Engine,
    alias: str,
    cursor: CursorColumn,
    bounds: SliceBounds,
) -> SliceScan:
    """The read of one slice: table mode where PostgreSQL would scan the whole table anyway."""
    query = bounded(_server_select(plan), plan.table, cursor, bounds)
    if plan.source.kind == "postgres" and plan.native and len(cursor.names) == 1:
        if _sequential(engine, query, plan.table.name):
            return _table_scan(plan, engine, alias, cursor, bounds)
    return _query_scan(plan, engine, alias, query)


def sample_scan(plan: ScanPlan, engine: sa.Engine, alias: str) -> SliceScan:
    """A read of no rows with the slice's columns and types, for the table's schema."""
    return _query_scan(plan, engine, alias, _server_select(plan).limit(0))


def _query_scan(plan: ScanPlan, engine: sa.Engine, alias: str, query: sa.Select[Any]) -> SliceScan:
    function = "postgres_query" if plan.source.kind == "postgres" else "mysql_query"
    sql = in_utc_session(_compile(query, engine.dialect), engine.dialect)
    return SliceScan(plan, "query", f"{function}({quote_literal(alias)}, {quote_literal(sql)})")


def _server_select(plan: ScanPlan) -> sa.Select[Any]:
    columns = [
        plan.rewrites[c.name](c).label(c.name) if c.name in plan.rewrites else c
        for c in plan.table.columns
    ]
    return sa.select(*columns)


def _compile(query: sa.Select[Any], dialect: sa.Dialect) -> str:
    # A dialect of the same kind without the DB-API's `%` escaping: the text is run as is.
    plain = type(dialect)(paramstyle="named")
    return str(query.compile(dialect=plain, compile_kwargs={"literal_binds": True}))


def _sequential(engine: sa.Engine, query: sa.Select[Any], table: str) -> bool:
    """Whether PostgreSQL's plan for the slice is a sequential scan of the table."""
    with engine.connect() as connection:
        (plan,) = connection.exec_driver_sql(
            "explain (format json) " + _compile(query, engine.dialect)
        ).scalar_one()
    top = (plan if isinstance(plan, dict) else json.loads(plan)[0])["Plan"]
    return top.get("Node Type") == "Seq Scan" and top.get("Relation Name") == table


def _table_scan(
    plan: ScanPlan, engine: sa.Engine, alias: str, cursor: CursorColumn, bounds: SliceBounds
) -> SliceScan:
    schema = plan.schema or engine.dialect.default_schema_name or "public"
    relation = ".".join(quote_identifier(part) for part in (alias, schema, plan.table.name))
    column = quote_identifier(cursor.names[0])
    conditions: list[str] = []
    parameters: list[Any] = []
    if bounds.lower is not None:
        conditions.append(f"{column} {'>=' if bounds.lower_inclusive else '>'} ?")
        parameters.append(cursor.bound(bounds.lower))
    if bounds.upper is not None:
        conditions.append(f"{column} {'<=' if bounds.upper_inclusive else '<'} ?")
        parameters.append(cursor.bound(bounds.upper))
    return SliceScan(plan, "table", relation, " and ".join(conditions), tuple(parameters))


@contextmanager
def attached(
    connection: duckdb.DuckDBPyConnection,
    source: ScannerSource,
    *,
    tinyint1_as_boolean: bool = False,
) -> Iterator[str]:
    """Attach the source read-only to `connection`; yields its alias, detaches after."""
    install_packaged_extensions(SCANNER_EXTENSIONS)
    name = f"scan_{uuid.uuid4().hex[:12]}"
    parts = {
        "host": source.host,
        "port": source.port,
        "database": source.database,
        "user": source.user,
        "password": source.password,
    }
    options = [f"type {source.kind}"] + [
        f"{key} {quote_literal(str(value))}" for key, value in parts.items() if value is not None
    ]
    # Never shown: a failure here is reported without the statement (it holds the password).
    secret = f"create temporary secret {name} ({', '.join(options)})"
    libpq = " ".join(f"{key}={_libpq_value(value)}" for key, value in source.options)
    try:
        connection.execute(secret)
    except duckdb.Error:
        raise ScannerUnavailable(
            f"DuckDB could not store the {source.kind} credentials (the URL's parts)"
        ) from None
    try:
        if source.kind == "mysql":
            # Each setting as the ConnectorX path reads it; no time limit on a long slice.
            connection.execute(f"set mysql_tinyint1_as_boolean = {str(tinyint1_as_boolean)}")
            connection.execute("set mysql_bit1_as_boolean = false")
            connection.execute("set mysql_query_timeout_enabled = false")
        connection.execute(
            f"attach {quote_literal(libpq)} as {name} "
            f"(type {source.kind}, secret {name}, read_only)"
        )
    except duckdb.Error as error:
        connection.execute(f"drop temporary secret if exists {name}")
        raise ScannerUnavailable(source.scrub(_first_line(str(error)))) from None
    try:
        yield name
    finally:
        connection.execute(f"detach database if exists {name}")
        connection.execute(f"drop temporary secret if exists {name}")


def _libpq_value(value: str) -> str:
    """A libpq keyword value, quoted: `'a b'`, with `\\` and `'` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def scan_failure(error: duckdb.Error, source: ScannerSource) -> SourceReadError | None:
    """The source database's own message in a DuckDB error raised by a scan, if it is one."""
    text = source.scrub(str(error))
    incomplete = re.search(r"Date out of range: (\S+)", text)
    if incomplete and source.kind == "mysql":
        return SourceReadError(
            f"a date of the slice is MySQL's incomplete date {incomplete.group(1)} (a zero "
            "month or day), which no date type can hold. Fix: read the table through a view "
            "that turns such dates into NULL, e.g. "
            "`if(month(d) = 0 or dayofmonth(d) = 0, null, d) as d`"
        )
    found = re.search(r"ERROR:\s+(.+)", text)  # PostgreSQL's error, as libpq prints it
    if found:
        return SourceReadError(found.group(1).strip())
    found = re.search(r"Failed to (?:prepare|execute|fetch) MySQL query[^:]*: (.+)", text)
    if found:
        return SourceReadError(found.group(1).strip())
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
