"""What a DuckLake warehouse adds to the landing contract: readers that never wait, and one
writer lock that holds across processes (and hosts) and dies with its holder.

Collected only in the lake-contract run (`INGESTION_TEST_WAREHOUSE=ducklake`, conftest.py),
where every warehouse is a fresh lake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.components.sql_database import SqlDatabaseSource
from ingestion_platform.demo import shop
from ingestion_platform.ducklake import DuckLake
from ingestion_platform.warehouse import Warehouse, WarehouseResource
from ingestion_platform_tests.sources import (
    build_source,
    failure_message,
    materialize,
    warehouse_lock_is_free,
)

HOLD_THE_LOCK = textwrap.dedent(
    """
    import sys, time
    from ingestion_platform.warehouse import WarehouseResource
    with WarehouseResource(path=sys.argv[1]).get().exclusive():
        print("held", flush=True)
        time.sleep(600)
    """
)


def _seed(warehouse: Warehouse, rows: int) -> None:
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            connection.execute("create schema if not exists src")
            connection.execute("create table src.t as select range as i from range(?)", [rows])
        finally:
            connection.close()


def test_a_reader_sees_the_last_commit_while_a_writer_is_mid_transaction(
    warehouse: Warehouse,
) -> None:
    _seed(warehouse, 10)
    with warehouse.exclusive():
        writer = warehouse.open_writer()
        try:
            writer.execute("begin")
            writer.execute("delete from src.t where i < 5")
            writer.execute("insert into src.t select range from range(100, 200)")
            started = time.monotonic()
            assert warehouse.count("src", "t") == 10  # the committed snapshot, not the open one
            assert time.monotonic() - started < 5  # it did not wait for the writer
            writer.execute("commit")
        finally:
            writer.close()
    assert warehouse.count("src", "t") == 105


def test_the_writer_lock_holds_across_processes_and_dies_with_its_holder(
    warehouse: Warehouse, warehouse_path: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not warehouse_lock_is_free(warehouse)
        holder.send_signal(signal.SIGKILL)  # no clean-up: its PostgreSQL session just ends
        holder.wait()
        deadline = time.monotonic() + 10
        while not warehouse_lock_is_free(warehouse):
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_catalog_names_the_settings_and_hides_the_password(
    tmp_path: Path,
) -> None:
    lake = DuckLake.from_settings(
        "postgresql://ingest:s3cret-pw@127.0.0.1:1/lake", str(tmp_path / "data")
    )
    with pytest.raises(ConnectionError) as raised:
        Warehouse(tmp_path / "w.duckdb", lake=lake).count("src", "t")
    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert message.startswith(
        "cannot attach the DuckLake warehouse (catalog postgresql://ingest:***@127.0.0.1:1/lake, "
        f"data path {tmp_path / 'data'}): "
    )
    assert message.endswith(
        "Fix: check INGESTION_WAREHOUSE_DUCKLAKE_CATALOG and "
        "INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH, and that the catalog database is reachable"
    )


def test_a_run_whose_catalog_is_down_fails_naming_the_lake_not_the_source(
    postgres_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    shop.create_shop(sa.create_engine(postgres_url), shop.ShopSeed(orders=50, days=2))
    attributes = {
        "connection": postgres_url,
        "cursor": "updated_at",
        "tables": [{"name": "orders"}],
        "batch": {"every": "day", "start": "2026-11-01"},
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    down = WarehouseResource(
        path=str(tmp_path / "w.duckdb"),
        ducklake_catalog="postgresql://ingest:s3cret-pw@127.0.0.1:1/lake",
        ducklake_data_path=str(tmp_path / "data"),
    )
    result = materialize(
        defs,
        partition_key="2026-11-01",
        resources={"warehouse": down},
        instance=instance,
        raise_on_error=False,
    )
    message = failure_message(result)
    assert message.startswith(
        "ConnectionError: cannot attach the DuckLake warehouse (catalog "
        "postgresql://ingest:***@127.0.0.1:1/lake, data path "
    ), message
    assert "s3cret-pw" not in message
