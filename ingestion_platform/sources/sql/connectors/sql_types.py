"""Faithful warehouse types for source columns the Arrow readers would fail on or flatten.

Decided once per slice from the reflected SQLAlchemy types, never by catching failures:

- ConnectorX reads most columns exactly and stays the reader. A column it cannot read, or
  reads lossily (decimals beyond 18 integer or 10 fractional digits, intervals, MySQL TIME,
  PostgreSQL money, which it would read as locale text),
  is rewritten in the SELECT into text it can read, and each batch casts that text back.
- A column type ConnectorX cannot read at all moves the whole table to the pyarrow backend,
  with a warning. A type neither reader can read fails the slice, naming the fix.
- dlt cannot create DuckDB's UUID, INTERVAL, LIST or UBIGINT columns, so each Arrow field
  whose warehouse type dlt would get wrong carries that type in its metadata
  (`DUCKDB_TYPE`); `align_column_types` alters the column in the landing transaction, and
  DuckDB casts the batch's values into it on insert.

Tables without such columns get an empty plan: no rewrite and no per-batch work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.sql_quoting import quote_identifier

Reader = Literal["connectorx", "pyarrow"]
Select = Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]
# Arrow field metadata key: the DuckDB type the warehouse column must have.
DUCKDB_TYPE = b"duckdb_type"
# ConnectorX reads decimals through rust_decimal at scale 10: wider ones fail or lose digits.
CONNECTORX_MAX_SCALE = 10
CONNECTORX_MAX_INTEGER_DIGITS = 18
DUCKDB_MAX_PRECISION = 38

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnRead:
    """How one column is read and landed, where the readers' defaults are not faithful."""

    name: str
    sql_type: str
    select: Select | None = None  # replaces the column in the SELECT
    arrow: pa.DataType | None = None  # each batch's column is cast to this
    duckdb: str | None = None  # the warehouse column's type
    hint: dict[str, Any] | None = None  # dlt's column type, which creates the column
    read_hint: dict[str, Any] | None = None  # pyarrow backend: how rows become Arrow
    infinities: bool = False  # ConnectorX's stand-ins for ±infinity become DuckDB's
    # DuckDB's scanner reads the column exactly as it is: its path keeps it out of the SELECT's
    # rewrites (which would cost it the parallel table reads).
    scanner_reads: bool = False


@dataclass(frozen=True)
class TypePlan:
    """The reader for a table and what it does differently for some of its columns."""

    backend: Reader
    columns: tuple[ColumnRead, ...] = ()
    unreadable: str | None = None  # why the table cannot be read, with the fix

    @property
    def is_empty(self) -> bool:
        return not self.columns and self.unreadable is None

    def hints(self) -> list[dict[str, Any]]:
        return [{"name": c.name, **c.hint} for c in self.columns if c.hint]

    def read_hints(self, columns: dict[str, Any]) -> dict[str, Any]:
        """dlt's hints for building Arrow from rows, with this plan's read types."""
        reads = {c.name: c.read_hint for c in self.columns if c.read_hint is not None}
        return {
            name: {"name": name, "nullable": True, **reads[name]} if name in reads else hint
            for name, hint in columns.items()
        }

    def rewrite(self, query: Any) -> Any:
        """`query` with each rewritten column selected through its expression."""
        selects = {c.name: c.select for c in self.columns if c.select}
        if not selects or not isinstance(query, sa.Select):
            return query
        columns = [
            selects[column.name](column).label(column.name) if column.name in selects else column
            for column in query.selected_columns
        ]
        return query.with_only_columns(*columns)

    def convert(self, item: pa.Table) -> pa.Table:
        """The batch with this plan's Arrow types and warehouse types; raises ValueError."""
        for column in self.columns:
            index = item.schema.get_field_index(column.name)
            if index < 0 or (column.arrow is None and column.duckdb is None):
                if index >= 0 and column.infinities:
                    item = item.set_column(
                        index, item.schema.field(index), _infinities(item.column(index))
                    )
                continue
            values = item.column(index)
            if column.arrow is not None and values.type != column.arrow:
                try:
                    values = pc.cast(values, column.arrow)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise ValueError(
                        f"column {column.name!r} ({column.sql_type}) holds a value "
                        f"{column.duckdb or column.arrow} cannot hold: {error}"
                    ) from None
            metadata = {DUCKDB_TYPE: column.duckdb.encode()} if column.duckdb else None
            field = pa.field(column.name, values.type, item.schema.field(index).nullable, metadata)
            item = item.set_column(index, field, values)
        return item


def plan_types(
    table: sa.Table,
    dialect: sa.Dialect,
    backend: Reader,
    *,
    tinyint1_as_boolean: bool = False,
    quiet: bool = False,
) -> TypePlan:
    """How to read `table` faithfully with `backend`, or with pyarrow where it must.

    `quiet` plans without the warnings, for a reader that only borrows the plan's types.
    """
    if dialect.name not in ("postgresql", "mysql", "mariadb"):
        return TypePlan(backend)  # SQLite's loosely typed columns keep dlt's reading
    is_pg = dialect.name == "postgresql"
    if backend == "connectorx":
        blocked = [c for c in table.columns if not _connectorx_reads(c.type, is_pg)]
        for column in [] if quiet else blocked:
            logger.warning(
                f"table {table.name!r}: ConnectorX cannot read column {column.name!r} of type "
                f"{type_name(column.type, dialect)}, so the table is read with the pyarrow "
                "backend (slower)"
            )
        backend = "pyarrow" if blocked else backend
    reads = []
    for column in table.columns:
        sql_type = type_name(column.type, dialect)
        if _unreadable(column.type):
            return TypePlan(
                backend,
                unreadable=f"column {column.name!r} has type {sql_type}, which neither "
                "ConnectorX nor the pyarrow backend can read. Fix: read the table through a "
                f"view that casts the column to text, e.g. `cast({column.name} as text[])`",
            )
        read = _column_read(column, sql_type, is_pg, backend, tinyint1_as_boolean)
        if read is not None:
            if read.select is not None and not quiet:
                logger.warning(
                    f"table {table.name!r}: reading column {column.name!r} of type "
                    f"{read.sql_type} as text, which the {backend} reader reads exactly"
                )
            reads.append(read)
    return TypePlan(backend, tuple(reads))


def align_column_types(
    connection: duckdb.DuckDBPyConnection, dataset: str, table: str, schema: pa.Schema
) -> list[str]:
    """Alter the columns whose type differs from their Arrow field's `DUCKDB_TYPE`.

    Runs in the landing transaction, after dlt created or migrated the table and before the
    insert. Returns the altered columns.
    """
    wanted = {
        field.name: field.metadata[DUCKDB_TYPE].decode()
        for field in schema
        if field.metadata and DUCKDB_TYPE in field.metadata
    }
    if not wanted:
        return []
    current = dict(
        connection.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [dataset, table],
        ).fetchall()
    )
    relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
    # A DuckLake changes a column's type only by widening it (INTEGER to BIGINT, say).
    in_lake = fetch_row(
        connection,
        "select type = 'ducklake' from duckdb_databases() where database_name = current_database()",
    ) == (True,)
    altered = []
    for name, type_name in wanted.items():
        target = str(connection.sqltype(type_name))  # parsed, so never arbitrary SQL
        if name not in current or current[name] == target:
            continue
        column = quote_identifier(name)
        if in_lake and not _widens(current[name], target):
            _recreate_empty_column(connection, relation, column, current[name], target)
        else:
            connection.execute(f"alter table {relation} alter column {column} type {target}")
        altered.append(name)
    return altered


# Signed integers, narrowest first: a DuckLake alters a column to a wider one in place.
_SIGNED_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT")


def _widens(current: str, target: str) -> bool:
    """Whether `target` is a wider signed integer than `current`."""
    known = current in _SIGNED_INTEGERS and target in _SIGNED_INTEGERS
    return known and _SIGNED_INTEGERS.index(current) < _SIGNED_INTEGERS.index(target)


def _recreate_empty_column(
    connection: duckdb.DuckDBPyConnection, relation: str, column: str, current: str, target: str
) -> None:
    """Drop and add the (quoted) `column` with type `target`: only while it holds no value.

    dlt's schema sync has just created the column (with the whole table, or added to it), so
    it is empty; the column moves to the end of the table.
    """
    (values,) = fetch_row(
        connection,
        f"select count({column}) from {relation}",  # noqa: S608
    )  # type: ignore[misc]
    if values:
        raise TypeError(
            f"{relation}.{column} holds {values} value(s) as {current}, and a DuckLake cannot "
            f"change it to {target}. Fix: re-land the table into a new schema"
        )
    connection.execute(f"alter table {relation} drop column {column}")
    connection.execute(f"alter table {relation} add column {column} {target}")


def type_name(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    try:
        return column_type.compile(dialect=dialect)
    except sa.exc.CompileError:  # e.g. a type SQLAlchemy reflected as NullType
        return type(column_type).__name__


def _as_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(column, sa.String)


def _pg_money_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(sa.cast(column, sa.Numeric), sa.String)


def _pg_interval_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A PostgreSQL interval as months, days and microseconds, which DuckDB parses exactly."""

    def part(field: str) -> sa.ColumnElement[Any]:
        return sa.extract(field, column)

    def text(number: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.cast(number, sa.BigInteger), sa.Text)

    def times(count: int) -> sa.ColumnElement[Any]:
        # Inlined: as a bound parameter PostgreSQL would type it integer, which overflows.
        return sa.literal_column(str(count))

    months = part("year") * times(12) + part("month")
    micros = (
        part("hour") * times(3_600_000_000)
        + part("minute") * times(60_000_000)
        + part("microseconds")
    )
    return text(months) + " months " + text(part("day")) + " days " + text(micros) + " microseconds"


# Array elements ConnectorX reads as Arrow lists: DuckDB element type and Arrow type.
def list_element(item: sa.types.TypeEngine[Any]) -> tuple[str, pa.DataType] | None:
    if isinstance(item, sa.Boolean):
        return "BOOLEAN", pa.bool_()
    if isinstance(item, sa.SmallInteger):
        return "SMALLINT", pa.int16()
    if isinstance(item, sa.BigInteger):
        return "BIGINT", pa.int64()
    if isinstance(item, sa.Integer):
        return "INTEGER", pa.int32()
    if isinstance(item, sa.Double):
        return "DOUBLE", pa.float64()
    if isinstance(item, sa.Float):
        return "FLOAT", pa.float32()
    if isinstance(item, sa.String) and not isinstance(item, sa.Enum):
        return "VARCHAR", pa.string()
    return None


# ConnectorX reads PostgreSQL's infinity and -infinity as chrono's extremes (262142-12-31
# 23:59:59.999999 and 262144-01-01 BC); DuckDB reads the extremes of Arrow's int64 (µs) and
# int32 (days) as its own infinities. Per Arrow storage type: ConnectorX's max and min.
_CONNECTORX_EXTREMES = {
    pa.int64(): (8_210_266_876_799_999_999, -8_334_601_228_800_000_000),
    pa.int32(): (95_026_236, -96_465_292),
}


def _infinities(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp[us] or date32 column with ConnectorX's extremes made DuckDB's infinities."""
    if pa.types.is_timestamp(values.type) and values.type.unit == "us":
        storage = pa.int64()
    elif pa.types.is_date32(values.type):
        storage = pa.int32()
    else:
        return values
    high, low = _CONNECTORX_EXTREMES[storage]
    raw = values.cast(storage)
    extremes = pc.min_max(raw).as_py()
    if extremes["max"] is None or (extremes["max"] < high and extremes["min"] > low):
        return values  # the usual batch: no infinity, no copy
    top = pa.scalar(2 ** (storage.bit_width - 1) - 1, storage)
    bottom = pa.scalar(-top.as_py(), storage)
    raw = pc.if_else(pc.equal(raw, high), top, pc.if_else(pc.equal(raw, low), bottom, raw))
    return raw.cast(values.type)


def _decimal_shape(precision: int | None, scale: int) -> tuple[int, int] | None:
    """The DuckDB DECIMAL(p,s) holding every value of a declared numeric, or None if none does.

    PostgreSQL allows a scale below zero (numeric(5,-2) holds 9,999,900 in steps of 100) or
    above the precision (numeric(3,5) holds 0.00999); DuckDB's scale is 0 to the width.
    """
    if precision is None:
        return None
    width, places = (precision - scale, 0) if scale < 0 else (max(precision, scale), scale)
    return (width, places) if width <= DUCKDB_MAX_PRECISION else None


def _connectorx_reads(column_type: sa.types.TypeEngine[Any], is_pg: bool) -> bool:
    """Whether ConnectorX reads the column, as it is or through `_column_read`'s rewrite."""
    if isinstance(column_type, sa.ARRAY):
        return list_element(column_type.item_type) is not None
    if isinstance(column_type, postgresql.BIT):
        return True  # as text (`_column_read`)
    readable: tuple[type[Any], ...] = (
        sa.Integer,
        sa.Numeric,
        # Not a Numeric since SQLAlchemy 2.1: without it every table with a float column
        # was read by the pyarrow backend.
        sa.Float,
        sa.String,
        sa.Boolean,
        sa.Date,
        sa.DateTime,
        sa.Time,
        sa.LargeBinary,
        sa.types._Binary,
        sa.JSON,
        sa.Uuid,
    )
    if is_pg:
        readable += (
            postgresql.INTERVAL,
            postgresql.MONEY,
            postgresql.INET,
            postgresql.CIDR,
            postgresql.OID,
            postgresql.ranges.AbstractRange,
        )
    else:
        readable += (mysql.BIT, mysql.YEAR)
    return isinstance(column_type, readable)


def _unreadable(column_type: sa.types.TypeEngine[Any]) -> bool:
    """Arrays ConnectorX cannot read, of values the pyarrow backend cannot convert either."""
    if not isinstance(column_type, sa.ARRAY):
        return False
    unconvertible = (
        postgresql.INTERVAL,
        postgresql.INET,
        postgresql.CIDR,
        postgresql.ranges.AbstractRange,
    )
    return isinstance(column_type.item_type, unconvertible)


def _column_read(
    column: sa.Column[Any], sql_type: str, is_pg: bool, backend: Reader, tinyint1_as_boolean: bool
) -> ColumnRead | None:
    """How `column` is read faithfully, or None if the reader's default already is."""
    name, column_type = column.name, column.type
    text = {"data_type": "text"}
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        declared = (column_type.precision, column_type.scale or 0)
        shape = _decimal_shape(*declared)
        if shape is None:
            # No DuckDB DECIMAL holds it: the exact decimal text, whatever the value.
            return ColumnRead(name, sql_type, _as_text, duckdb="VARCHAR", hint=text, read_hint=text)
        precision, scale = shape
        decimal = {"data_type": "decimal", "precision": precision, "scale": scale}
        exact = scale <= CONNECTORX_MAX_SCALE and precision - scale <= CONNECTORX_MAX_INTEGER_DIGITS
        # A shape DuckDB lacks is read as text by the scanner too: its native read of
        # numeric(5,-2) kills the process (SIGFPE in DuckDB 1.5.5's postgres extension), and
        # it reads MySQL's DECIMAL(10,2) UNSIGNED as DECIMAL(9,2), failing on 8 digits.
        unsigned = getattr(column_type, "unsigned", False)
        if backend == "connectorx" and (not exact or shape != declared or unsigned):
            return ColumnRead(
                name,
                sql_type,
                _as_text,
                arrow=pa.decimal128(precision, scale),
                duckdb=f"DECIMAL({precision},{scale})",
                hint=decimal,
            )
        if shape != declared:
            return ColumnRead(name, sql_type, hint=decimal, read_hint=decimal)
        return None  # dlt creates DECIMAL(p,s) from the reflected type
    if is_pg and backend == "connectorx" and isinstance(column_type, sa.DateTime | sa.Date):
        return ColumnRead(name, sql_type, infinities=True)
    if is_pg and isinstance(column_type, postgresql.BIT):
        # ConnectorX packs BIT(n) into bytes, losing n ('101' and '1010' both read 0xa0).
        return ColumnRead(name, sql_type, _as_text, hint=text, read_hint=text)
    if is_pg and type(column_type) is sa.String:
        # PostgreSQL's one-byte "char" (catalog columns), which ConnectorX fails on.
        return ColumnRead(name, sql_type, _as_text, hint=text, read_hint=text)
    if is_pg and isinstance(column_type, postgresql.MONEY):
        # PostgreSQL prints money in the server's locale ('$1,234.56'); its numeric cast is
        # exact. 19 integer digits hold any money value, 4 decimals any currency's minor unit.
        money = {"data_type": "decimal", "precision": 23, "scale": 4}
        return ColumnRead(
            name,
            sql_type,
            _pg_money_text,
            arrow=pa.decimal128(23, 4),
            duckdb="DECIMAL(23,4)",
            hint=money,
            read_hint=text,
        )
    if is_pg and isinstance(column_type, postgresql.INTERVAL):
        return ColumnRead(
            name, sql_type, _pg_interval_text, duckdb="INTERVAL", hint=text, read_hint=text
        )
    if not is_pg and isinstance(column_type, sa.Time):
        # MySQL TIME is a duration of -838 to 838 hours, not a time of day.
        return ColumnRead(name, sql_type, _as_text, duckdb="INTERVAL", hint=text, read_hint=text)
    if is_pg and isinstance(column_type, sa.Time) and column_type.timezone:
        return ColumnRead(name, sql_type, _as_text, duckdb="TIMETZ", hint=text, read_hint=text)
    if is_pg and isinstance(column_type, sa.Time):
        # PostgreSQL's 24:00:00 (the end of a day) reads as 00:00 through Python's and Rust's
        # times; as text, DuckDB's TIME holds it.
        return ColumnRead(
            name, sql_type, _as_text, duckdb="TIME", hint=text, read_hint=text, scanner_reads=True
        )
    if is_pg and isinstance(column_type, (postgresql.INET, postgresql.CIDR)):
        return ColumnRead(name, sql_type, _as_text, hint=text, read_hint=text)
    if is_pg and isinstance(column_type, postgresql.ranges.AbstractRange):
        return ColumnRead(name, sql_type, _as_text, hint=text, read_hint=text)
    if isinstance(column_type, sa.Uuid):
        return ColumnRead(name, sql_type, duckdb="UUID")
    if isinstance(column_type, sa.JSON) and backend == "connectorx":
        # ConnectorX reads JSON as text. Left with dlt's reflected `json` type, the hint and
        # the Arrow string differ and dlt warns on every run; typed as text for dlt, the
        # warehouse column is still made JSON, and DuckDB parses each value on insert.
        return ColumnRead(name, sql_type, duckdb="JSON", hint=text)
    if isinstance(column_type, sa.ARRAY):
        element = list_element(column_type.item_type)
        if element is None:
            return None  # the pyarrow backend lands it as JSON text
        duckdb_element, arrow_element = element
        if backend == "connectorx":
            return ColumnRead(name, sql_type, duckdb=f"{duckdb_element}[]")
        # Left untyped, dlt builds Arrow lists from the row values instead of JSON text.
        list_type = pa.list_(arrow_element)
        return ColumnRead(
            name, sql_type, arrow=list_type, duckdb=f"{duckdb_element}[]", read_hint={}
        )
    if isinstance(column_type, mysql.BIGINT) and column_type.unsigned:
        if backend == "connectorx":
            return ColumnRead(name, sql_type, duckdb="UBIGINT")
        wide = {"data_type": "decimal", "precision": 20, "scale": 0}  # int64 overflows
        return ColumnRead(name, sql_type, arrow=pa.uint64(), duckdb="UBIGINT", read_hint=wide)
    if tinyint1_as_boolean and isinstance(column_type, mysql.TINYINT):
        if column_type.display_width == 1:
            return ColumnRead(
                name,
                sql_type,
                arrow=pa.bool_(),
                duckdb="BOOLEAN",
                hint={"data_type": "bool"},
                read_hint={"data_type": "bigint"},
            )
    wider = _unsigned_wider(column_type)
    if wider is not None:
        # dlt sizes the column by the signed type (INT UNSIGNED → INTEGER), which cannot hold
        # the upper half of the range: the next signed type up holds all of it, and a column
        # landed narrower before widens in place (a DuckLake widens too, never narrows).
        duckdb_type, bits = wider
        hint = {"data_type": "bigint", "precision": bits}
        return ColumnRead(name, sql_type, duckdb=duckdb_type, hint=hint, read_hint=hint)
    return None


# MySQL's unsigned integers below BIGINT, and the signed type (and its bits) that holds each.
_UNSIGNED_WIDER: tuple[tuple[type[Any], str, int], ...] = (
    (mysql.TINYINT, "SMALLINT", 16),
    (mysql.SMALLINT, "INTEGER", 32),
    (mysql.MEDIUMINT, "INTEGER", 32),
    (mysql.INTEGER, "BIGINT", 64),
)


def _unsigned_wider(column_type: sa.types.TypeEngine[Any]) -> tuple[str, int] | None:
    """The warehouse type for a MySQL unsigned integer below BIGINT, or None."""
    if not getattr(column_type, "unsigned", False):
        return None
    for sql_class, duckdb_type, bits in _UNSIGNED_WIDER:
        if isinstance(column_type, sql_class):
            return duckdb_type, bits
    return None
