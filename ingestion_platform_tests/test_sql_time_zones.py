"""Timestamps land as the same instants, and windows are cut in UTC, whatever the source
server's time zone.

MySQL/MariaDB hand TIMESTAMP values out, and read the literals they are compared with, in
the session's time zone, which defaults to the server's. Here the MariaDB server runs at
+05:00, as a server kept in local time would, and every reader must still land UTC times.
A PostgreSQL database set to Asia/Kolkata (+05:30) must not move a `timestamptz` either.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform.sources.sql.connectors import sql_database
from ingestion_platform_tests.conftest import MARIADB_ADMIN_URL, mariadb_alone
from ingestion_platform_tests.sources import build_source, failure_message, materialize

# (id, happened_at in UTC, noted_at: a zone-less timestamp, which no time zone touches)
ROWS = [
    (1, datetime(2026, 11, 1, 23, 30), datetime(2026, 11, 1, 23, 30)),
    (2, datetime(2026, 11, 2, 10, 0, 0, 123456), datetime(2026, 11, 2, 10, 0, 0, 123456)),
    (3, datetime(2026, 11, 2, 20, 0), datetime(2026, 11, 2, 20, 0)),
]
# How a session in the server's own zone shows row 1's happened_at: the setting bites.
SHOWN_IN_SERVER_ZONE = {
    "mariadb": ("cast(happened_at as char)", "2026-11-02 04:30:00.000000"),
    "postgres": ("cast(happened_at as text)", "2026-11-02 05:00:00+05:30"),
}


def _create_events(url: str, happened_type: str, zoneless_type: str, utc: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(utc)
        connection.exec_driver_sql(
            f"create table events (id int primary key, happened_at {happened_type} null, "
            f"noted_at {zoneless_type} not null)"
        )
        connection.execute(
            sa.text("insert into events values (:id, :happened_at, :noted_at)"),
            [{"id": i, "happened_at": h, "noted_at": n} for i, h, n in ROWS],
        )
    engine.dispose()


@pytest.fixture
def mariadb_at_plus_five(mariadb_url: str) -> Iterator[str]:
    """The test's database, on a server whose new sessions start at +05:00 (a server-wide
    setting: no other MariaDB test runs meanwhile)."""
    _create_events(mariadb_url, "timestamp(6)", "datetime(6)", "SET time_zone = '+00:00'")
    admin = sa.create_engine(MARIADB_ADMIN_URL, poolclass=sa.pool.NullPool)
    with mariadb_alone():
        with admin.connect() as connection:
            before = connection.exec_driver_sql("select @@global.time_zone").scalar_one()
            connection.exec_driver_sql("SET GLOBAL time_zone = '+05:00'")
        try:
            yield mariadb_url
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text("SET GLOBAL time_zone = :before"), {"before": before})
            admin.dispose()


@pytest.fixture
def postgres_at_plus_five_thirty(postgres_url: str) -> str:
    """The test's PostgreSQL database, whose new sessions start in Asia/Kolkata."""
    _create_events(postgres_url, "timestamptz", "timestamp", "set time zone 'UTC'")
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        name = engine.url.database
        connection.exec_driver_sql(f"alter database \"{name}\" set timezone to 'Asia/Kolkata'")
    return postgres_url


def _daily_events(tmp_path: Path, url: str, backend: str) -> dg.Definitions:
    """Source `tz`: table `events` in daily windows of `happened_at`, read by `backend`."""
    attributes = {
        "connection": url,
        "cursor": "happened_at",
        "backend": backend,
        "tables": [{"name": "events", "primary_key": ["id"]}],
        "batch": {"every": "day", "start": "2026-11-01"},
    }
    return build_source(SqlDatabaseSource, tmp_path / "tz", attributes)


def _landed(warehouse: Warehouse, batch: str) -> list[tuple]:
    return warehouse.query(
        "select id, happened_at, noted_at from tz.events where _batch_key = ? order by id",
        (batch,),
    )


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
@pytest.mark.parametrize("server", ["mariadb", "postgres"])
def test_timestamps_land_as_the_same_instants_in_their_utc_windows(
    server: str,
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    fixture = "mariadb_at_plus_five" if server == "mariadb" else "postgres_at_plus_five_thirty"
    url = request.getfixturevalue(fixture)
    plain = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with plain.connect() as connection:
        text, expected_text = SHOWN_IN_SERVER_ZONE[server]
        shown = connection.exec_driver_sql(f"select {text} from events where id = 1")  # noqa: S608
        assert shown.scalar_one() == expected_text
    defs = _daily_events(tmp_path, url, backend)

    for day in ("2026-11-01", "2026-11-02", "2026-11-02"):
        materialize(defs, partition_key=day, resources=resources, instance=instance)

    # MySQL's TIMESTAMP lands zone-less, in UTC; PostgreSQL's timestamptz as TIMESTAMPTZ.
    aware = server == "postgres"
    expected = [(i, h.replace(tzinfo=UTC) if aware else h, n) for i, h, n in ROWS]
    assert _landed(warehouse, "2026-11-01") == expected[:1]
    assert _landed(warehouse, "2026-11-02") == expected[1:]
    assert warehouse.count("tz", "events") == 3


def test_a_mysql_that_ignores_the_utc_hint_off_utc_is_refused_with_the_fix(
    mariadb_at_plus_five: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MySQL 5.7 takes the `SET_VAR` hint for a comment, as MariaDB does: told it is MySQL,
    MariaDB at +05:00 stands in for such a server. Readers with their own connections are
    refused before they read; the pyarrow backend (SQLAlchemy's UTC sessions) lands."""
    monkeypatch.setattr(sql_database, "_is_mariadb", lambda _dialect: False)
    engine = sql_database.make_engine(mariadb_at_plus_five)
    assert sql_database.unread_in_utc(engine) == (
        "the server ignores the SET_VAR hint that makes a read use UTC (MySQL before 8.0) "
        "and its time zone is +05:00"
    )
    engine.dispose()
    for backend in ("auto", "connectorx", "pyarrow"):
        defs = _daily_events(tmp_path, mariadb_at_plus_five, backend)
        result = materialize(
            defs, partition_key="2026-11-02", resources=resources, instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        if backend == "pyarrow":
            assert result.success
            assert _landed(warehouse, "2026-11-02") == ROWS[1:]
        else:
            assert failure_message(result) == (
                "ingestion_platform.sources.sql.connectors.sql_database.SourceDatabaseError: "
                "source 'tz': table 'events' has TIMESTAMP column(s) happened_at, but the "
                "server ignores the SET_VAR hint that makes a read use UTC (MySQL before 8.0) "
                "and its time zone is +05:00, so they would land shifted from UTC. Nothing "
                "was landed. Fix: set the server's time_zone to '+00:00' (default-time-zone), "
                f"or `backend: pyarrow` in {tmp_path / 'tz' / 'defs.yaml'}"
            )
            assert not warehouse.table_exists("tz", "events")
