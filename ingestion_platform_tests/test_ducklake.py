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
import uuid
from pathlib import Path

import boto3
import dagster as dg
import dlt
import pytest
import sqlalchemy as sa

from ingestion_platform.core.ducklake import DATA_PATH_ENV, DuckLake
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.demo import shop
from ingestion_platform.sources.api.landing import land_slice
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import (
    build_source,
    failure_message,
    materialize,
    warehouse_lock_is_free,
)

HOLD_THE_LOCK = textwrap.dedent(
    """
    import sys, time
    from ingestion_platform.core.warehouse import WarehouseResource
    with WarehouseResource(path=sys.argv[1]).get().exclusive():
        print("held", flush=True)
        time.sleep(600)
    """
)


def _daily_orders(postgres_url: str, tmp_path: Path) -> dg.Definitions:
    """The shop's orders table as a daily source, as its defs.yaml would declare it."""
    attributes = {
        "connection": postgres_url,
        "cursor": "updated_at",
        "tables": [{"name": "orders"}],
        "batch": {"every": "day", "start": "2026-11-01"},
    }
    return build_source(SqlDatabaseSource, tmp_path / "shop", attributes)


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


def test_the_holder_of_the_writer_lock_can_take_it_again(warehouse: Warehouse) -> None:
    # As the file lock allows: a second PostgreSQL session would wait for the first.
    with warehouse.exclusive(timeout=5), warehouse.exclusive(timeout=1):
        with warehouse.connect(read_only=False) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
    assert warehouse_lock_is_free(warehouse)


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
    defs = _daily_orders(postgres_url, tmp_path)
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


def test_a_lake_with_its_data_in_s3_lands_and_replays_a_slice_exactly(
    moto_endpoint: str,
    aws_env: None,
    postgres_url: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)  # boto3's own variable
    monkeypatch.setenv(DATA_PATH_ENV, f"s3://{bucket}/lake/")
    engine = sa.create_engine(postgres_url)
    shop.create_shop(engine, shop.ShopSeed(orders=80, days=2))
    with engine.connect() as connection:
        expected = (
            connection.execute(
                sa.text(
                    "select id from orders where updated_at >= '2026-11-01' "
                    "and updated_at < '2026-11-02' order by id"
                )
            )
            .scalars()
            .all()
        )
    defs = _daily_orders(postgres_url, tmp_path)
    resources = {"warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb"))}
    warehouse = resources["warehouse"].get()
    for _ in range(2):  # the replay replaces the slice
        materialize(defs, partition_key="2026-11-01", resources=resources, instance=instance)
        landed = warehouse.query("select id from shop.orders order by id")
        assert [row[0] for row in landed] == expected and expected
    # dlt's path (API sources) writes to the same bucket through its ducklake destination.
    # Enough rows to be written as Parquet: a lake keeps a few rows inline in its catalog.
    tickets = [{"id": n, "tags": ["a"]} for n in range(500)]
    records = dlt.resource(tickets, name="tickets", primary_key="id")
    land_slice(
        warehouse=warehouse,
        dataset="helpdesk",
        pipeline_name="helpdesk__api",
        resources=[records],
        batch_keys=["k"],
        key_of=lambda _record: "k",
    )
    assert warehouse.query("select count(distinct id) from helpdesk.tickets") == [(500,)]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]
    folders = {obj["Key"].split("/")[1] for obj in listed if obj["Key"].endswith(".parquet")}
    assert {"shop", "helpdesk"} <= folders
