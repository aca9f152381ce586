"""Fixtures that give each test real peers: PostgreSQL, MariaDB, SQLite and a DuckDB warehouse.

A peer that is not running is a failure, never a skip: `make test` starts the local
services first, and CI must prove the platform against the real thing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.ducklake import CATALOG_ENV, DATA_PATH_ENV
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform_tests.music import CATALOG, SECRET

# Fixtures shared by the test modules, one module per peer: those that start their own
# peers (an OpenSSH sshd, moto's server, the Kinesis emulators) and the file sources' inbox.
pytest_plugins = [
    "ingestion_platform_tests.sshd",
    "ingestion_platform_tests.moto_server",
    "ingestion_platform_tests.kinesis_emulators",
    "ingestion_platform_tests.files_helpers",
]

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
# `make test` runs the landing-contract modules a second time with the warehouse in a
# DuckLake (ingestion_platform_tests/ducklake.py), so both warehouses keep the same contract.
WAREHOUSE_KIND = os.environ.get("INGESTION_TEST_WAREHOUSE", "duckdb")
# What only a lake does; the lake-contract run collects it.
collect_ignore = [] if WAREHOUSE_KIND == "ducklake" else ["test_ducklake.py"]


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


# Every MariaDB test holds this file's lock shared; a test that changes a server-wide
# setting holds it alone (`mariadb_alone`), so no test in another xdist worker sees it.
_MARIADB_LOCK = Path(tempfile.gettempdir()) / "ingestion_platform_tests_mariadb.lock"
_mariadb_lock_fd: list[int] = []


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test."""
    if not _mariadb_lock_fd:
        _mariadb_lock_fd.append(os.open(_MARIADB_LOCK, os.O_RDWR | os.O_CREAT, 0o600))
    fcntl.flock(_mariadb_lock_fd[0], fcntl.LOCK_SH)
    try:
        yield from _fresh_database(MARIADB_ADMIN_URL, "MariaDB", "`", "")
    finally:
        fcntl.flock(_mariadb_lock_fd[0], fcntl.LOCK_UN)


@contextmanager
def mariadb_alone() -> Iterator[None]:
    """The MariaDB server to this test alone, for a server-wide setting (inside `mariadb_url`)."""
    fcntl.flock(_mariadb_lock_fd[0], fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(_mariadb_lock_fd[0], fcntl.LOCK_SH)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.sqlite'}"


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(autouse=WAREHOUSE_KIND == "ducklake")
def ducklake_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh DuckLake (catalog in its own PostgreSQL database), set as every run's warehouse.

    Through the environment, as a deployment would set it, so every `WarehouseResource` a
    test builds, in this process or a subprocess, lands in the lake.
    """
    for catalog_url in _fresh_database(POSTGRES_ADMIN_URL, "PostgreSQL", '"', " with (force)"):
        monkeypatch.setenv(CATALOG_ENV, catalog_url)
        monkeypatch.setenv(DATA_PATH_ENV, str(tmp_path / "lake") + "/")
        yield catalog_url


@pytest.fixture
def warehouse(warehouse_path: Path) -> Warehouse:
    return WarehouseResource(path=str(warehouse_path)).get()


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
