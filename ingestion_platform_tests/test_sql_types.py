"""Source types the Arrow readers fail on or flatten land as their faithful DuckDB types.

Every typed table is landed twice, and the second landing must replace the first exactly.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform.sources.sql.connectors.sql_types import DUCKDB_TYPE, align_column_types
from ingestion_platform_tests.sources import build_source, failure_message, materialize

DAY = "2026-11-02"
UUID = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
N38 = Decimal("1234567890123456789012345678.0123456789")
WIDE = "1234567890123456789012345678901234567890.0123456789"
WIDER = "12345678901234567890123456789012345.123456789012345678901234567890"


def _create(url: str, ddl: str, *rows: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(ddl)
    engine.dispose()
    _insert(url, *rows)


def _insert(url: str, *rows: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for row in rows:
            connection.exec_driver_sql(f"insert into typed values {row}")  # noqa: S608
    engine.dispose()


def _land(url: str, tmp_path: Path, resources: dict, instance: Any, **options: Any) -> Any:
    attributes = {
        "connection": url,
        "cursor": "updated_at",
        "tables": [{"name": "typed"}],
        "batch": {"every": "day", "start": "2026-11-01"},
        **options,
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "src", attributes)
    # Twice: the second landing meets a table that already has the typed columns (DuckDB 2.0
    # refused it while a partial fetch was open on the connection).
    first = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )
    if not first.success:
        return first
    return materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )


def _read_by_scanner(result: Any, instance: Any) -> bool:
    """Whether the run read its table through DuckDB's scanner (its log says so)."""
    logs = [event.message or "" for event in instance.all_logs(result.run_id)]
    return any("read through DuckDB's" in message for message in logs)


def _column_types(warehouse: Warehouse) -> dict[str, str]:
    rows = warehouse.query(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'src' and table_name = 'typed'"
    )
    return dict(rows)


@pytest.mark.parametrize("backend", ["auto", "pyarrow"])
def test_postgres_types_land_faithfully(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, n38 numeric(38,10), "
        "n12 numeric(12,2), wide numeric, iv interval, u uuid, ta text[], ia int[])",
        f"(1, '{DAY} 10:00+00', {N38}, 1234567890.12, {WIDE}, "
        f"'1 year 2 mons -3 days 25:00:01.5', '{UUID}', ARRAY['a', NULL, 'c'], ARRAY[1, NULL, 3])",
        f"(2, '{DAY} 11:00+00', null, null, null, null, null, null, null)",
        f"(3, '{DAY} 12:00+00', -0.0000000001, -0.01, -0.5, '-00:00:01.5', '{UUID}', '{{}}', "
        "'{}')",
        f"(4, '{DAY} 13:00+00', 0, 0, 'NaN', '50 hours', '{UUID}', ARRAY[NULL]::text[], "
        "ARRAY[-2147483648])",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    assert _read_by_scanner(result, instance) == (backend == "auto")
    landed = warehouse.query(
        "select id, n38, n12, wide, iv::varchar, u, ta, ia from src.typed order by id"
    )
    assert landed == [
        (1, N38, Decimal("1234567890.12"), WIDE, "1 year 2 months -3 days 25:00:01.5", UUID,
         ["a", None, "c"], [1, None, 3]),
        (2, None, None, None, None, None, None, None),
        (3, Decimal("-0.0000000001"), Decimal("-0.01"), "-0.5", "-00:00:01.5", UUID, [], []),
        (4, Decimal(0), Decimal(0), "NaN", "50:00:00", UUID, [None], [-2147483648]),
    ]  # fmt: skip
    assert _column_types(warehouse) | {"_batch_key": "", "_loaded_at": ""} == {
        "id": "BIGINT",
        "updated_at": "TIMESTAMP WITH TIME ZONE",
        "n38": "DECIMAL(38,10)",
        "n12": "DECIMAL(12,2)",
        "wide": "VARCHAR",
        "iv": "INTERVAL",
        "u": "UUID",
        "ta": "VARCHAR[]",
        "ia": "INTEGER[]",
        "_batch_key": "",
        "_loaded_at": "",
    }


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
def test_a_postgres_time_of_24_00_lands_as_the_end_of_the_day_not_midnight(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    """ConnectorX and the pyarrow backend read 24:00:00 as 00:00 (Rust's and Python's times
    have no 24:00), so they read `time` as text; the scanner reads it exactly, in parallel."""
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, t time)",
        f"(1, '{DAY} 10:00+00', '24:00:00')",
        f"(2, '{DAY} 11:00+00', '00:00:00')",
        f"(3, '{DAY} 12:00+00', null)",
        f"(4, '{DAY} 13:00+00', '23:59:59.999999')",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    assert warehouse.query("select id, t::varchar from src.typed order by id") == [
        (1, "24:00:00"),
        (2, "00:00:00"),
        (3, None),
        (4, "23:59:59.999999"),
    ]
    assert _column_types(warehouse)["t"] == "TIME"
    logs = [event.message or "" for event in instance.all_logs(result.run_id)]
    parallel = any("parallel reads of the table" in message for message in logs)
    assert parallel == (backend == "auto")


# The unsigned integers below BIGINT (ui, us, um, ut): each type's maximum, the first value
# past its signed range, and zero.
MARIADB_ROWS = (
    f"(1, '{DAY} 10:00', 18446744073709551615, {N38}, {WIDER}, '-838:59:59.000000', 1, 127, "
    "4294967295, 65535, 16777215, 255)",
    f"(2, '{DAY} 11:00', null, null, null, null, null, null, null, null, null, null)",
    f"(3, '{DAY} 12:00', 0, -0.0000000001, -0.5, '100:00:00.5', 0, -128, 2147483648, 32768, "
    "8388608, 128)",
    f"(4, '{DAY} 13:00', 9223372036854775808, 0, 0, '-00:00:01.5', 1, 0, 0, 0, 0, 0)",
)


def _mariadb_typed(url: str) -> None:
    _create(
        url,
        "create table typed (id int primary key, updated_at datetime, ub bigint unsigned, "
        "dc decimal(38,10), dc65 decimal(65,30), tm time(6), flag tinyint(1), small tinyint, "
        "ui int unsigned, us smallint unsigned, um mediumint unsigned, ut tinyint unsigned)",
        *MARIADB_ROWS,
    )


@pytest.mark.parametrize("backend", ["auto", "pyarrow"])
def test_mariadb_types_land_faithfully(
    backend: str, mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _mariadb_typed(mariadb_url)

    result = _land(
        mariadb_url, tmp_path, resources, instance, backend=backend, tinyint1_as_boolean=True
    )

    assert result.success, failure_message(result)
    assert _read_by_scanner(result, instance) == (backend == "auto")
    landed = warehouse.query(
        "select id, ub, dc, dc65, tm::varchar, flag, small, ui, us, um, ut from src.typed "
        "order by id"
    )
    zeros = "0." + "0" * 30
    assert landed == [
        (1, 2**64 - 1, N38, WIDER, "-838:59:59", True, 127, 2**32 - 1, 2**16 - 1, 2**24 - 1, 255),
        (2, None, None, None, None, None, None, None, None, None, None),
        (3, 0, Decimal("-0.0000000001"), "-0.5" + "0" * 29, "100:00:00.5", False, -128,
         2**31, 2**15, 2**23, 128),
        (4, 2**63, Decimal(0), zeros, "-00:00:01.5", True, 0, 0, 0, 0, 0),
    ]  # fmt: skip
    types = _column_types(warehouse)
    names = ("ub", "dc", "dc65", "tm", "flag", "ui", "us", "um", "ut")
    assert {name: types[name] for name in names} == {
        "ub": "UBIGINT",
        "dc": "DECIMAL(38,10)",
        "dc65": "VARCHAR",
        "tm": "INTERVAL",
        "flag": "BOOLEAN",
        "ui": "BIGINT",
        "us": "INTEGER",
        "um": "INTEGER",
        "ut": "SMALLINT",
    }


def test_mariadb_tinyint1_stays_an_integer_without_the_option(
    mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _mariadb_typed(mariadb_url)

    result = _land(mariadb_url, tmp_path, resources, instance)

    assert result.success, failure_message(result)
    assert _read_by_scanner(result, instance)
    assert warehouse.query("select flag from src.typed order by id") == [(1,), (None,), (0,), (1,)]
    assert _column_types(warehouse)["flag"] == _column_types(warehouse)["small"] != "BOOLEAN"


@pytest.mark.parametrize("backend", ["auto", "pyarrow"])
def test_a_mariadb_unsigned_column_landed_narrower_widens_keeping_its_rows(
    backend: str, mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        mariadb_url,
        "create table typed (id int primary key, updated_at datetime, ui int unsigned)",
        f"(1, '{DAY} 10:00', 7)",
    )
    assert _land(mariadb_url, tmp_path, resources, instance, backend=backend).success
    with warehouse.exclusive():  # the INTEGER column a landing before the widening made
        connection = warehouse.open_writer()
        connection.execute("alter table src.typed alter column ui type integer")
        connection.close()
    _insert(mariadb_url, f"(2, '{DAY} 11:00', 4294967295)")

    result = _land(mariadb_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    assert warehouse.query("select id, ui from src.typed order by id") == [(1, 7), (2, 2**32 - 1)]
    assert _column_types(warehouse)["ui"] == "BIGINT"


def test_an_integer_column_widens_in_place_keeping_its_values(warehouse: Warehouse) -> None:
    field = pa.field("ui", pa.int64(), metadata={DUCKDB_TYPE: b"BIGINT"})
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            connection.execute("create schema if not exists src")
            connection.execute("create table src.typed (id integer, ui integer)")
            connection.execute("insert into src.typed values (1, 2147483647)")
            # A DuckLake changes a type only by widening it: in place, not by recreating it.
            altered = align_column_types(connection, "src", "typed", pa.schema([field]))
            connection.execute("insert into src.typed values (2, 4294967295)")
        finally:
            connection.close()

    assert altered == ["ui"]
    assert warehouse.query("select id, ui from src.typed order by id") == [
        (1, 2**31 - 1),
        (2, 2**32 - 1),
    ]
    assert _column_types(warehouse)["ui"] == "BIGINT"


def test_a_type_connectorx_cannot_read_moves_the_table_to_pyarrow_with_a_warning(
    postgres_url: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _create(
        postgres_url,
        "create table typed (id int, updated_at timestamptz, mac macaddr, ia int[])",
        f"(1, '{DAY} 10:00+00', '08:00:2b:01:02:03', ARRAY[7, NULL])",
    )

    with caplog.at_level(logging.WARNING, logger="ingestion_platform"):
        result = _land(postgres_url, tmp_path, resources, instance)

    assert result.success, failure_message(result)
    assert warehouse.query("select id, mac, ia from src.typed") == [
        (1, "08:00:2b:01:02:03", [7, None])
    ]
    assert (
        "table 'typed': ConnectorX cannot read column 'mac' of type MACADDR, so the table is "
        "read with the pyarrow backend (slower)"
    ) in caplog.messages


@pytest.mark.parametrize("backend", ["auto", "pyarrow"])
def test_a_type_no_reader_can_read_fails_naming_column_type_and_fix(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int, updated_at timestamptz, spans interval[])",
        f"(1, '{DAY} 10:00+00', ARRAY['1 day'::interval])",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert failure_message(result) == (
        "ingestion_platform.sources.sql.connectors.sql_database.SourceDatabaseError: "
        "source 'src': reading "
        "table 'typed' failed: column 'spans' has type INTERVAL[], which neither ConnectorX nor "
        "the pyarrow backend can read. Fix: read the table through a view that casts the column "
        "to text, e.g. `cast(spans as text[])`. Nothing was landed"
    )
    assert not warehouse.table_exists("src", "typed")


def test_a_pyarrow_backend_read_failing_mid_way_keeps_the_message_shape(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table numbers (id int, updated_at timestamptz)",
    )
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"insert into numbers select i, '{DAY} 10:00+00' from generate_series(1, 50) i"  # noqa: S608
        )
        connection.exec_driver_sql(
            "create view typed as select id, updated_at, 100 / (id - 40) as ratio from numbers"
        )
    engine.dispose()

    result = _land(postgres_url, tmp_path, resources, instance, backend="pyarrow", chunk_size=10)

    assert failure_message(result) == (
        "ingestion_platform.sources.sql.connectors.sql_database.SourceDatabaseError: "
        "source 'src': reading "
        "table 'typed' failed: division by zero. Nothing was landed"
    )


@pytest.mark.parametrize("backend", ["auto", "pyarrow"])
def test_postgres_money_lands_as_an_exact_decimal_not_locale_text(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, price money)",
        f"(1, '{DAY} 10:00+00', '1234.56')",
        f"(2, '{DAY} 11:00+00', '-92233720368547758.08')",
        f"(3, '{DAY} 12:00+00', null)",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    assert warehouse.query("select id, price from src.typed order by id") == [
        (1, Decimal("1234.56")),
        (2, Decimal("-92233720368547758.08")),
        (3, None),
    ]
    assert _column_types(warehouse)["price"] == "DECIMAL(23,4)"


@pytest.mark.parametrize("backend", ["auto", "connectorx"])
def test_postgres_infinities_and_bc_dates_land_as_postgresql_holds_them(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, ts timestamp, "
        "tz timestamptz, d date)",
        f"(1, '{DAY} 10:00+00', 'infinity', '-infinity', 'infinity')",
        f"(2, '{DAY} 11:00+00', '-infinity', 'infinity', '-infinity')",
        f"(3, '{DAY} 12:00+00', '0044-03-15 10:00 BC', null, '0044-03-15 BC')",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    # ConnectorX alone read infinity as 262142-12-31 23:59:59.999999, a real-looking date.
    landed = "select id, ts::varchar, tz::varchar, d::varchar from src.typed order by id"
    assert warehouse.query(landed) == [
        (1, "infinity", "-infinity", "infinity"),
        (2, "-infinity", "infinity", "-infinity"),
        (3, "0044-03-15 (BC) 10:00:00", None, "0044-03-15 (BC)"),
    ]


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
def test_postgres_bits_one_byte_char_and_unusual_numeric_scales_land_exactly(
    backend: str, postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, n numeric(5,-2), "
        'm numeric(3,5), c "char", b bit(3), vb varbit(8))',
        f"(1, '{DAY} 10:00+00', 12345, 0.00999, 'a', B'101', B'1010')",
        f"(2, '{DAY} 11:00+00', -99900, -0.00001, 'z', B'000', B'')",
        f"(3, '{DAY} 12:00+00', null, null, null, null, null)",
    )

    result = _land(postgres_url, tmp_path, resources, instance, backend=backend)

    assert result.success, failure_message(result)
    # ConnectorX alone packed BIT(3) '101' into the byte 0xa0 (BIT(4) '1010' reads the same).
    assert warehouse.query("select id, n, m, c, b, vb from src.typed order by id") == [
        (1, Decimal(12300), Decimal("0.00999"), "a", "101", "1010"),
        (2, Decimal(-99900), Decimal("-0.00001"), "z", "000", ""),
        (3, None, None, None, None, None),
    ]
    types = _column_types(warehouse)
    assert [types[name] for name in ("n", "m", "c", "b", "vb")] == [
        "DECIMAL(7,0)",
        "DECIMAL(5,5)",
        "VARCHAR",
        "VARCHAR",
        "VARCHAR",
    ]


def _create_permissive(url: str, ddl: str, *rows: str) -> None:
    """A MariaDB table written with an empty sql_mode, as legacy databases hold zero dates."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("set session sql_mode = ''")
        connection.exec_driver_sql(ddl)
        for row in rows:
            connection.exec_driver_sql(f"insert into typed values {row}")  # noqa: S608
    engine.dispose()


def _fails_then_lands_through_view(
    url: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance,
    *,
    fix: str,
    view: str,
) -> None:
    """The landing of `typed` fails with `fix` and lands nothing; then the view `typed_view`
    (`view`: its SELECT) that the fix suggests lands."""
    failed = _land(url, tmp_path, resources, instance)

    assert not failed.success
    assert failure_message(failed).endswith(
        f"source 'src': reading table 'typed' failed: {fix}. Nothing was landed"
    )
    assert not warehouse.table_exists("src", "typed")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"create view typed_view as {view}")
    engine.dispose()
    landed = _land(url, tmp_path, resources, instance, tables=[{"name": "typed_view"}])
    assert landed.success, failure_message(landed)


@pytest.mark.parametrize("null", ["null", "not null"])
def test_a_mariadb_zero_date_fails_the_slice_naming_the_column_and_the_view_that_lands_it(
    mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance, null: str
) -> None:
    """The scanner reads a zero date as NULL: a landed NULL makes the server count zero dates
    (a genuine NULL in `d` does not fail the slice), and a NOT NULL column's violation is
    traced back to the zero date that caused it."""
    _create_permissive(
        mariadb_url,
        "create table typed (id int primary key, updated_at datetime, d date, "
        f"dt datetime(6) {null})",
        f"(1, '{DAY} 10:00', null, '2026-01-02 03:04:05.678901')",
        f"(2, '{DAY} 11:00', '2026-01-03', '0000-00-00 00:00:00')",
    )

    # The scanner alone landed the zero date as NULL, silently.
    _fails_then_lands_through_view(
        mariadb_url, tmp_path, warehouse, resources, instance,
        fix="column 'dt' holds MySQL's zero date ('0000-00-00'), which no date type can hold. "
        "Fix: read the table through a view that turns it into NULL, e.g. `nullif(dt, 0) as "
        "dt` in place of the column",
        view="select id, updated_at, d, nullif(dt, 0) as dt from typed",
    )  # fmt: skip
    assert warehouse.query("select id, d, dt from src.typed_view order by id") == [
        (1, None, datetime(2026, 1, 2, 3, 4, 5, 678901)),
        (2, date(2026, 1, 3), None),
    ]


@pytest.mark.parametrize("key", ["primary key", ""])
def test_a_postgres_nan_in_a_bounded_numeric_fails_the_slice_naming_the_column_and_the_view(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance, key: str
) -> None:
    """DuckDB's scanner lands a numeric(p,s) NaN as 0: a landed 0 makes the server count the
    NaNs of those rows (by primary key) or of the slice (no key). A genuine 0 and a double
    precision NaN (DOUBLE holds it) land."""
    _create(
        postgres_url,
        f"create table typed (id int {key}, updated_at timestamptz, "
        "amount numeric(10,2), ratio double precision)",
        f"(1, '{DAY} 10:00+00', 0, 'NaN')",
        f"(2, '{DAY} 11:00+00', 'NaN', 1.5)",
    )

    _fails_then_lands_through_view(
        postgres_url, tmp_path, warehouse, resources, instance,
        fix="column 'amount' holds NaN, which a DECIMAL(10,2) cannot hold. Fix: read the table "
        "through a view that turns it into NULL, e.g. `nullif(amount, 'NaN') as amount` in "
        "place of the column",
        view="select id, updated_at, nullif(amount, 'NaN') as amount, ratio from typed",
    )  # fmt: skip
    rows = warehouse.query("select id, amount, isnan(ratio), ratio from src.typed_view order by id")
    assert rows == [(1, Decimal("0.00"), True, rows[0][3]), (2, None, False, 1.5)]


def test_a_mariadb_incomplete_date_fails_the_slice_naming_the_fix(
    mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create_permissive(
        mariadb_url,
        "create table typed (id int primary key, updated_at datetime, d date)",
        f"(1, '{DAY} 10:00', '2026-02-00')",
    )

    failed = _land(mariadb_url, tmp_path, resources, instance)

    assert not failed.success
    assert failure_message(failed).endswith(
        "source 'src': reading table 'typed' failed: a date of the slice is MySQL's incomplete "
        "date 2026-2-0 (a zero month or day), which no date type can hold. Fix: read the table "
        "through a view that turns such dates into NULL, e.g. "
        "`if(month(d) = 0 or dayofmonth(d) = 0, null, d) as d`. Nothing was landed"
    )


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
def test_mariadb_unsigned_decimals_and_latin1_text_land_exactly(
    backend: str, mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        mariadb_url,
        "create table typed (id int primary key, updated_at datetime, "
        "du decimal(10,2) unsigned, lat varchar(20) character set latin1)",
        f"(1, '{DAY} 10:00', 99999999.99, 'café ñ')",
        f"(2, '{DAY} 11:00', 0, '')",
    )

    result = _land(mariadb_url, tmp_path, resources, instance, backend=backend)

    # DuckDB's scanner alone read DECIMAL(10,2) UNSIGNED as DECIMAL(9,2) and failed.
    assert result.success, failure_message(result)
    assert warehouse.query("select id, du, lat from src.typed order by id") == [
        (1, Decimal("99999999.99"), "café ñ"),
        (2, Decimal("0.00"), ""),
    ]
    assert _column_types(warehouse)["du"] == "DECIMAL(10,2)"


def test_columns_landing_under_one_name_fail_naming_them_before_anything_is_read(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        'create table typed (id int primary key, updated_at timestamptz, "aB" int, a_b int)',
        f"(1, '{DAY} 10:00+00', 1, 2)",
    )

    result = _land(postgres_url, tmp_path, resources, instance)

    # Before: dlt's NameNormalizationCollision, or DuckDB's duplicate-column binder error.
    assert failure_message(result) == (
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'src' / 'defs.yaml'}: tables[0].name: table 'typed': columns 'aB', "
        "'a_b' would all land as column 'a_b' (the warehouse's snake_case names). Fix: read "
        "the table through a view that renames all but one of them."
    )
    assert not warehouse.table_exists("src", "typed")


def test_a_column_named_like_the_platforms_own_fails_naming_it(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        postgres_url,
        "create table typed (id int primary key, updated_at timestamptz, _loaded_at text)",
        f"(1, '{DAY} 10:00+00', 'the source system''s own')",
    )

    result = _land(postgres_url, tmp_path, resources, instance)

    assert failure_message(result) == (
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'src' / 'defs.yaml'}: tables[0].name: table 'typed': column "
        "'_loaded_at' would land as the platform's own column '_loaded_at' (every landing "
        "writes _batch_key and _loaded_at). Fix: read the table through a view that renames it."
    )
    assert not warehouse.table_exists("src", "typed")


def test_mariadb_varbinary_lands_as_bytes(
    mariadb_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    _create(
        mariadb_url,
        "create table typed (id int primary key, updated_at datetime, tag varbinary(10), "
        "code binary(4))",
        f"(1, '{DAY} 10:00', x'00ff10', x'0102')",
        f"(2, '{DAY} 11:00', null, null)",
    )

    result = _land(mariadb_url, tmp_path, resources, instance)

    assert result.success, failure_message(result)
    assert warehouse.query("select id, tag, code from src.typed order by id") == [
        (1, b"\x00\xff\x10", b"\x01\x02\x00\x00"),
        (2, None, None),
    ]


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_a_mixed_case_table_lands_under_its_warehouse_name_and_reconciles(
    database: str, request: pytest.FixtureRequest, tmp_path: Path, warehouse: Warehouse,
    resources: dict, instance,
) -> None:  # fmt: skip
    url = request.getfixturevalue(f"{database}_url")
    quote = '"' if database == "postgres" else "`"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"create table {quote}Events{quote} (id int primary key, updated_at timestamp)"
        )
        connection.exec_driver_sql(
            f"insert into {quote}Events{quote} values (1, '{DAY} 10:00'), (2, '{DAY} 11:00')"  # noqa: S608
        )
    engine.dispose()
    attributes = {
        "connection": url,
        "cursor": "updated_at",
        "tables": [{"name": "Events"}],
        "batch": {"every": "day", "start": "2026-11-01"},
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "src", attributes)

    for _ in range(2):
        result = materialize(
            defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
        )
        assert result.success, failure_message(result)

    assert warehouse.query("select id from src.events order by id") == [(1,), (2,)]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"] is True
