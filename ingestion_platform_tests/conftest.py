"""Fixtures that give each test real peers: PostgreSQL, MariaDB, SQLite and a DuckDB warehouse.

A peer that is not running is a failure, never a skip: `make test` starts the local
services first, and CI must prove the platform against the real thing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform.warehouse import Warehouse, WarehouseResource
from ingestion_platform_tests.music import CATALOG, SECRET

# Fixtures that start their own peers: an OpenSSH sshd, and the Kinesis emulators.
pytest_plugins = ["ingestion_platform_tests.sshd", "ingestion_platform_tests.kinesis_emulators"]

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _require(url: str, what: str) -> sa.Engine:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(f"{what} is not reachable at {url}; run `make services`. ({error.orig})")
    return engine


def _fresh_database(admin_url: str, what: str, quote: str, drop_suffix: str) -> Iterator[str]:
    """Create an empty database for one test on a real server, and drop it afterwards."""
    admin = _require(admin_url, what)
    name = f"ingest_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f"create database {quote}{name}{quote}"))
    yield sa.make_url(admin_url).set(database=name).render_as_string(False)
    with admin.connect() as connection:
        connection.execute(sa.text(f"drop database {quote}{name}{quote}{drop_suffix}"))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    yield from _fresh_database(POSTGRES_ADMIN_URL, "PostgreSQL", '"', " with (force)")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test."""
    yield from _fresh_database(MARIADB_ADMIN_URL, "MariaDB", "`", "")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.sqlite'}"


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def warehouse(warehouse_path: Path) -> Warehouse:
    return Warehouse(warehouse_path)


@pytest.fixture
def resources(warehouse_path: Path) -> dict[str, object]:
    return {"warehouse": WarehouseResource(path=str(warehouse_path))}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(autouse=True)
def _no_dlt_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MusicApiServer]:
    """The music API on a free loopback port, with the source's variables pointing at it."""
    with MusicApiServer(catalog=CATALOG, client_secret=SECRET).start() as running:
        monkeypatch.setenv("MUSIC_API_URL", running.url)
        monkeypatch.setenv("MUSIC_API_CLIENT_ID", "demo-client")
        monkeypatch.setenv("MUSIC_API_CLIENT_SECRET", SECRET)
        yield running
