"""DuckDB's scanners land PostgreSQL and MySQL/MariaDB slices exactly as ConnectorX does.

Each typed table is landed twice into one warehouse, once per path (`backend: connectorx`
into schema `cx`, `backend: auto`, the scanner, into schema `scan`), and the two tables must
hold the same column types and the same values. A type the scanner cannot land that way
falls back to ConnectorX, and the run's log says why.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform.sources.sql.connectors.scanner import (
    ScannerSource,
    ScannerUnavailable,
    ScanPlan,
    attached,
    plan_scan,
    slice_scan,
)
from ingestion_platform.sources.sql.connectors.sql_database import CursorColumn, SliceBounds
from ingestion_platform.sources.sql.connectors.sql_types import plan_types
from ingestion_platform_tests.sources import build_source, failure_message, materialize

DAY = "2026-11-02"
UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"

POSTGRES_COLUMNS = (
    "id int primary key, updated_at timestamptz, sm smallint, bi bigint, r real, "
    "d double precision, n38 numeric(38,10), n12 numeric(12,2), n20 numeric(20,0), "
    "wide numeric, n40 numeric(40,0), iv interval, u uuid, ta text[], ia int[], ba boolean[], "
    "fa float8[], price money, tz timetz, t time, ip inet, cidr_ cidr, rng int4range, "
    "b bytea, dt date, ts timestamp, tx text, vc varchar(5), ch char(3), "
    "bo boolean"
)
POSTGRES_ROWS = (
    f"(1, '{DAY} 10:00+00', -32768, 9223372036854775807, 1.5, 0.1, "
    "1234567890123456789012345678.0123456789, 1234567890.12, 12345678901234567890, "
    "1234567890123456789012345678901234567890.0123456789, "
    "1234567890123456789012345678901234567890, '1 year 2 mons -3 days 25:00:01.5', "
    f"'{UUID}', ARRAY['a', NULL, 'c'], ARRAY[1, NULL, 3], ARRAY[true, NULL], ARRAY[1.5, NULL], "
    "'1234.56', '10:00+02', '23:59:59.999999', '10.0.0.1/8', '10.0.0.0/8', '[1,5)', "
    "'\\x00ff', '2026-01-02', "
    "'2026-01-02 03:04:05.678901', 'héllo', 'abc', 'ab', true)",
    f"(2, '{DAY} 11:00+00'" + ", null" * 28 + ")",
    f"(3, '{DAY} 12:00+00', 0, -9223372036854775808, 'NaN', '-Infinity', -0.0000000001, "
    "-0.01, 0, 'NaN', -1, '-00:00:01.5', "
    f"'{UUID}', '{{}}', '{{}}', '{{}}', '{{}}', '-92233720368547758.08', '00:00-11', '00:00', "
    "'::1', '::/0', 'empty', '', '0001-01-01', '1970-01-01 00:00:00', '', "
    "'', '', false)",
    f"(4, '{DAY} 13:00+00', 1, 0, 3.4e38, 1e-300, 0, 0, 0, '0.5', 0, '50 hours', '{UUID}', "
    "ARRAY[NULL]::text[], ARRAY[-2147483648], ARRAY[false], ARRAY['NaN'::float8], 0, "
    "'00:00+00', '12:00', '192.168.0.1', '192.168.0.0/24', '(,3]', '\\x', "
    "'9999-12-31', '2262-04-11 23:47:16', ' ', 'x', 'x', true)",
)

MARIADB_COLUMNS = (
    "id int primary key, updated_at datetime, ub bigint unsigned, iu int unsigned, "
    "mi mediumint, sm smallint unsigned, ti tinyint, dc decimal(38,10), dc65 decimal(65,30), "
    "dc12 decimal(12,2), tm time(6), flag tinyint(1), y year, e enum('x','y'), f float, "
    "j json, vb varbinary(10), bn binary(4), bl blob, tx text, vc varchar(20), ch char(3), "
    "dt date, ts timestamp(3) null, dt6 datetime(6), db double, st set('a','b','c'), "
    "b1 bit(1), b8 bit(8)"
)
MARIADB_ROWS = (
    f"(1, '{DAY} 10:00', 18446744073709551615, 4294967295, -8388608, 65535, 127, "
    "1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567890, 1234567890.12, "
    "'-838:59:59.000000', 1, 2024, 'y', 1.5, "
    """'{"a": "é", "b": [1, 2.50]}', x'00ff10', x'0102', x'ff', 'héllo', 'abc', 'ab', """
    "'2026-01-02', '2026-01-02 03:04:05.678', '2026-01-02 03:04:05.678901', 2.25, 'a,c', 1, "
    "255)",
    f"(2, '{DAY} 11:00'" + ", null" * 27 + ")",
    f"(3, '{DAY} 12:00', 0, 0, 0, 0, -128, -0.0000000001, -0.5, -0.01, '100:00:00.5', 0, "
    "1901, 'x', -0.1, '[1]', x'', x'', x'', '', '', '', '1000-01-01', "
    "'1970-01-01 00:00:01', '1000-01-01 00:00:00', 1e300, '', 0, 0)",
    f"(4, '{DAY} 13:00', 9223372036854775808, 1, 1, 1, 0, 0, 0, 0, '-00:00:01.5', 1, 0, "
    "'y', 3.4e38, 'null', x'00', x'00', x'00', ' ', ' ', ' ', '9999-12-31', "
    "'2038-01-19 03:14:07.999', '9999-12-31 23:59:59.999999', -0.1, 'c,b', null, 128)",
)


def _create(url: str, columns: str, rows: tuple[str, ...], table: str = "typed") -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"create table {table} ({columns})")
        for row in rows:
            connection.exec_driver_sql(f"insert into {table} values {row}")  # noqa: S608
    engine.dispose()


def _land(
    url: str,
    folder: Path,
    resources: dict,
    instance: dg.DagsterInstance,
    table: str = "typed",
    **options: Any,
) -> dg.ExecuteInProcessResult:
    attributes = {
        "connection": url,
        "cursor": "updated_at",
        "tables": [{"name": table}],
        "batch": {"every": "day", "start": "2026-11-01"},
        **options,
    }
    defs = build_source(SqlDatabaseSource, folder, attributes)
    result = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )
    assert result.success, failure_message(result)
    return result


def _landed(warehouse: Warehouse, schema: str) -> dict[str, tuple[str, list, list]]:
    """Each landed column: its type, its values, and its values as DuckDB prints them."""
    types = warehouse.query(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = 'typed' and column_name <> '_loaded_at' "
        "order by ordinal_position",
        [schema],
    )
    landed = {}
    for name, data_type in types:
        sql = f'select "{name}", "{name}"::varchar from {schema}.typed order by id'  # noqa: S608
        values = warehouse.query(sql)
        # repr: NaN is not equal to itself.
        landed[name] = (data_type, repr([v for v, _ in values]), [t for _, t in values])
    return landed


def _differences(warehouse: Warehouse) -> dict[str, tuple]:
    """The columns the two paths landed differently: {column: (ConnectorX's, the scanner's)}."""
    cx, scan = _landed(warehouse, "cx"), _landed(warehouse, "scan")
    assert list(cx) == list(scan)
    return {name: (cx[name], scan[name]) for name in cx if cx[name] != scan[name]}


def _logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.message for e in instance.all_logs(result.run_id) if e.message]


def _both_paths(
    url: str, tmp_path: Path, resources: dict, instance: dg.DagsterInstance, **options: Any
) -> tuple[dg.ExecuteInProcessResult, Warehouse]:
    _land(url, tmp_path / "cx", resources, instance, backend="connectorx", **options)
    scanned = _land(url, tmp_path / "scan", resources, instance, **options)
    return scanned, resources["warehouse"].get()


def test_postgres_scanner_lands_what_connectorx_lands(
    postgres_url: str, tmp_path: Path, resources: dict, instance: dg.DagsterInstance
) -> None:
    _create(postgres_url, POSTGRES_COLUMNS, POSTGRES_ROWS)

    scanned, warehouse = _both_paths(postgres_url, tmp_path, resources, instance)

    assert _differences(warehouse) == {}
    assert any("read through DuckDB's postgres scanner" in m for m in _logs(instance, scanned))


@pytest.mark.parametrize("tinyint1_as_boolean", [False, True])
def test_mariadb_scanner_lands_what_connectorx_lands(
    tinyint1_as_boolean: bool,
    mariadb_url: str,
    tmp_path: Path,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    _create(mariadb_url, MARIADB_COLUMNS, MARIADB_ROWS)

    scanned, warehouse = _both_paths(
        mariadb_url, tmp_path, resources, instance, tinyint1_as_boolean=tinyint1_as_boolean
    )

    assert _differences(warehouse) == {}
    assert any("read through DuckDB's mysql scanner" in m for m in _logs(instance, scanned))
    # Spelled out for the types people ask about (the comparison above covers every column).
    assert warehouse.query("select ub, y, st, tm::varchar from scan.typed order by id") == [
        (2**64 - 1, 2024, "a,c", "-838:59:59"),
        (None, None, None, None),
        (0, 1901, "", "100:00:00.5"),
        (2**63, 0, "b,c", "-00:00:01.5"),
    ]


def test_a_type_the_scanner_cannot_land_the_same_way_falls_back_naming_it(
    postgres_url: str, tmp_path: Path, resources: dict, instance: dg.DagsterInstance
) -> None:
    _create(
        postgres_url,
        "id int primary key, updated_at timestamptz, body jsonb",
        (f"""(1, '{DAY} 10:00+00', '{{"b": [1, 2.50]}}')""",),
    )

    result = _land(postgres_url, tmp_path / "src", resources, instance)

    logs = _logs(instance, result)
    assert (
        "table 'typed': column 'body' is JSONB, which ConnectorX lands re-serialised "
        "(minified, numbers as 64-bit floats), where the scanner lands PostgreSQL's own text; "
        "read with ConnectorX"
    ) in logs
    assert not any("scanner (" in m for m in logs)
    warehouse = resources["warehouse"].get()
    assert warehouse.query("select body::varchar from src.typed") == [('{"b":[1,2.5]}',)]


def _numbers(url: str, rows: int) -> sa.Engine:
    """`numbers(id, at, note)`: `rows` rows, ids 1..rows, one a minute from DAY, analysed."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "create table numbers (id bigint primary key, at timestamptz, note text)"
        )
        connection.exec_driver_sql(
            "insert into numbers select g, timestamptz '2026-11-02 00:00+00' + g * interval "  # noqa: S608
            f"'1 minute', md5(g::text) from generate_series(1, {rows}) g"
        )
        connection.exec_driver_sql("analyze numbers")
    return engine


@pytest.mark.parametrize(
    ("lower", "upper", "mode"),
    [(None, 20_000, "table"), (1_000, 1_100, "query"), (19_990, None, "query")],
)
def test_postgres_slices_read_exactly_their_bounds_in_either_mode(
    lower: int | None,
    upper: int | None,
    mode: str,
    postgres_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    engine = _numbers(postgres_url, 20_000)
    table = sa.Table("numbers", sa.MetaData(), autoload_with=engine)
    type_plan = plan_types(table, engine.dialect, "connectorx", quiet=True)
    plan = plan_scan(table, engine.dialect, postgres_url, type_plan)
    assert isinstance(plan, ScanPlan)
    cursor = CursorColumn(("id",), "integer")
    connection = duckdb.connect()
    with attached(connection, plan.source) as alias:
        scan = slice_scan(plan, engine, alias, cursor, SliceBounds.after(lower, upper))
        connection.execute("set pg_debug_show_queries = true")
        counted = f"select min(id), max(id), count(*) from ({scan.select_sql()})"  # noqa: S608
        ids = connection.execute(counted, scan.parameters).fetchone()
        ctypes.CDLL(None).fflush(None)  # DuckDB prints the queries through C's buffered stdout
    engine.dispose()

    assert scan.mode == mode
    first, last = (lower or 0) + 1, upper or 20_000
    assert ids == (first, last, last - first + 1)
    # The bounds reach PostgreSQL: each COPY it was sent carries them.
    printed = capfd.readouterr()
    text = " ".join((printed.out + printed.err).split()).replace('"', "").replace("'", "")
    sent = [copy.split(" TO STDOUT")[0] for copy in text.split("COPY (")[1:]]
    assert sent
    for copy in sent:
        copy = copy.replace("numbers.", "")
        assert lower is None or f"id > {lower}" in copy, copy
        assert upper is None or f"id <= {upper}" in copy, copy


@pytest.mark.parametrize("database", ["postgres", "mariadb"])
def test_a_password_never_reaches_a_message_when_the_server_refuses(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = {
        "postgres": "postgresql://no_such_role:S3cret-PW@127.0.0.1:5432/test",
        "mariadb": "mysql+pymysql://root:S3cret-PW@127.0.0.1:3306/test",
    }[database]
    source = ScannerSource.from_url(url)
    assert isinstance(source, ScannerSource)
    connection = duckdb.connect()

    with caplog.at_level(logging.DEBUG), pytest.raises(ScannerUnavailable) as refused:
        with attached(connection, source):
            pass

    message = str(refused.value)
    assert "S3cret-PW" not in message and "S3cret-PW" not in caplog.text
    assert ("no_such_role" if database == "postgres" else "Access denied") in message
    # Nothing of the attempt is left on the connection: no secret, no attached database.
    assert connection.execute("select count(*) from duckdb_secrets()").fetchone() == (0,)
    assert "S3cret-PW" not in str(connection.execute("from duckdb_databases()").fetchall())


def test_a_password_in_the_url_is_in_no_log_or_event_of_a_scanned_run(
    postgres_url: str, tmp_path: Path, resources: dict, instance: dg.DagsterInstance
) -> None:
    # PostgreSQL here trusts local connections, so the password is sent and ignored.
    url = sa.make_url(postgres_url).set(password="S3cret-PW").render_as_string(False)
    _create(url, "id int primary key, updated_at timestamptz", (f"(1, '{DAY} 10:00+00')",))

    result = _land(url, tmp_path / "src", resources, instance)

    assert any("read through DuckDB's postgres scanner" in m for m in _logs(instance, result))
    assert "S3cret-PW" not in str(instance.all_logs(result.run_id))
