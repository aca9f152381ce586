"""DuckDB's scanners land PostgreSQL and MySQL/MariaDB slices exactly as ConnectorX does.

Each typed table is landed twice into one warehouse, once per path (`backend: connectorx`
into schema `cx`, `backend: auto`, the scanner, into schema `scan`), and the two tables must
hold the same column types and the same values. A type the scanner cannot land that way
falls back to ConnectorX, and the run's log says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.sql.component import SqlDatabaseSource
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
    "dt date, ts timestamp(3) null, dt6 datetime(6)"
)
MARIADB_ROWS = (
    f"(1, '{DAY} 10:00', 18446744073709551615, 2147483647, -8388608, 32767, 127, "
    "1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567890, 1234567890.12, "
    "'-838:59:59.000000', 1, 2024, 'y', 1.5, "
    """'{"a": "é", "b": [1, 2.50]}', x'00ff10', x'0102', x'ff', 'héllo', 'abc', 'ab', """
    "'2026-01-02', '2026-01-02 03:04:05.678', '2026-01-02 03:04:05.678901')",
    f"(2, '{DAY} 11:00'" + ", null" * 23 + ")",
    f"(3, '{DAY} 12:00', 0, 0, 0, 0, -128, -0.0000000001, -0.5, -0.01, '100:00:00.5', 0, "
    "1901, 'x', -0.1, '[1]', x'', x'', x'', '', '', '', '1000-01-01', "
    "'1970-01-01 00:00:01', '1000-01-01 00:00:00')",
    f"(4, '{DAY} 13:00', 9223372036854775808, 1, 1, 1, 0, 0, 0, 0, '-00:00:01.5', 1, 0, "
    "'y', 3.4e38, 'null', x'00', x'00', x'00', ' ', ' ', ' ', '9999-12-31', "
    "'2038-01-19 03:14:07.999', '9999-12-31 23:59:59.999999')",
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
