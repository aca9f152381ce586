"""Time-batched SQL sources: each daily partition lands exactly its rows, replayably."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source, materialize, with_warehouse

SEED = shop.ShopSeed(customers=50, orders=600, events=10, days=6)


def _attributes(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "connection": url,
        "cursor": "updated_at",
        "tables": [{"name": "customers", "primary_key": ["id"]}, {"name": "orders"}],
        "batch": {"every": "day", "start": "2026-11-01"},
        **overrides,
    }


def _source_ids(url: str, table: sa.Table, day: str, days: int = 1) -> list[int]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    bound = table.c.updated_at
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        if engine.dialect.name in ("sqlite", "mysql", "mariadb"):
            start = start.replace(tzinfo=None)
        query = sa.select(table.c.id).where(bound >= start, bound < start + timedelta(days=days))
        ids = sorted(connection.execute(query).scalars())
    engine.dispose()
    return ids


def _landed_ids(warehouse: Warehouse, table: str, batch: str) -> list[int]:
    rows = warehouse.query(
        f'select id from shop."{table}" where _batch_key = ? order by id',  # noqa: S608
        (batch,),
    )
    return [row[0] for row in rows]


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def shop_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(f"{request.param}_url")
    shop.create_shop(sa.create_engine(url), SEED)
    return url


def test_daily_partitions_land_exactly_their_rows_and_rerun_replaces(
    shop_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(shop_url))
    for day in ("2026-11-02", "2026-11-03"):
        materialize(defs, partition_key=day, resources=resources, instance=instance)
    first_load = warehouse.query("select max(_loaded_at) from shop.orders")[0][0]

    materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)

    for day in ("2026-11-02", "2026-11-03"):
        expected = _source_ids(shop_url, shop.orders, day)
        assert expected, "the seed should put orders on every day"
        assert _landed_ids(warehouse, "orders", day) == expected
        assert _landed_ids(warehouse, "customers", day) == _source_ids(
            shop_url, shop.customers, day
        )
    # Re-running 11-02 replaced only 11-02: 11-03 keeps its first load time.
    untouched = warehouse.query(
        "select distinct _loaded_at from shop.orders where _batch_key = '2026-11-03'"
    )
    assert untouched == [(first_load,)]
    total = len(_source_ids(shop_url, shop.orders, "2026-11-02", days=2))
    assert warehouse.count("shop", "orders") == total


def test_landed_rows_match_the_source_exactly(
    shop_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(shop_url))
    result = materialize(defs, partition_key="2026-11-04", resources=resources, instance=instance)

    ids = _source_ids(shop_url, shop.orders, "2026-11-04")
    columns = [shop.orders.c[name] for name in ("id", "customer_id", "amount", "status")]
    engine = sa.create_engine(shop_url)
    with engine.connect() as connection:
        expected = connection.execute(
            sa.select(*columns, shop.orders.c.updated_at)
            .where(shop.orders.c.id.in_(ids))
            .order_by(shop.orders.c.id)
        ).all()
    engine.dispose()
    landed = warehouse.query(
        "select id, customer_id, amount, status, updated_at from shop.orders order by id"
    )
    assert [tuple(row) for row in expected] == landed
    events = result.asset_materializations_for_node("shop__orders")
    assert events[0].metadata["dagster/row_count"].value == len(expected)
    assert events[0].metadata["slice_start"].value == datetime(2026, 11, 4, tzinfo=UTC).timestamp()


def test_single_run_backfill_keys_each_row_by_its_own_day(
    shop_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(shop_url))
    result = materialize(
        defs,
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-11-01",
            "dagster/asset_partition_range_end": "2026-11-04",
        },
    )
    assert result.success
    for day in ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"):
        assert _landed_ids(warehouse, "orders", day) == _source_ids(shop_url, shop.orders, day)
    assert warehouse.count("shop", "orders") == len(
        _source_ids(shop_url, shop.orders, "2026-11-01", days=4)
    )


def test_a_day_emptied_at_the_source_is_emptied_in_the_warehouse(
    sqlite_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(sqlite_url)
    shop.create_shop(engine, SEED)
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(sqlite_url))
    materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)
    materialize(defs, partition_key="2026-11-03", resources=resources, instance=instance)
    assert warehouse.count("shop", "orders", batch="2026-11-02") > 0

    with engine.begin() as connection:
        day = datetime(2026, 11, 2)
        connection.execute(
            shop.orders.delete().where(
                shop.orders.c.updated_at >= day, shop.orders.c.updated_at < day + timedelta(days=1)
            )
        )
    materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)

    assert warehouse.count("shop", "orders", batch="2026-11-02") == 0
    assert _landed_ids(warehouse, "orders", "2026-11-03") == _source_ids(
        sqlite_url, shop.orders, "2026-11-03"
    )


def test_the_schedules_tick_requests_the_window_that_closed(tmp_path: Path) -> None:
    defs = build_source(
        SqlDatabaseSource,
        tmp_path / "shop",
        _attributes("sqlite:///nowhere.sqlite", batch={"every": "hour", "start": "2026-11-01"}),
    )
    location = with_warehouse(defs)
    schedule = location.resolve_schedule_def("shop__schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    # A job of the source's own tables, so the UI shows the schedule on each of them.
    assert schedule.job_name == "shop__job"
    job = location.resolve_job_def("shop__job")
    assert job.asset_layer.executable_asset_keys == {
        dg.AssetKey(["shop", "customers"]),
        dg.AssetKey(["shop", "orders"]),
    }
    orders = location.resolve_assets_def(dg.AssetKey(["shop", "orders"]))
    assert orders.partitions_def.get_first_partition_key() == "2026-11-01-00:00"
    assert orders.backfill_policy == dg.BackfillPolicy.single_run()

    tick = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
    repository = location.get_repository_def()
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=repository
    ) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == request.run_key == "2026-11-02-04:00"
    tables = [dg.AssetKey(["shop", "customers"]), dg.AssetKey(["shop", "orders"])]
    assert request.asset_selection == tables
    assert {check.asset_key for check in request.asset_check_keys or []} == set(tables)


def test_both_arrow_backends_land_the_same_contents(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    shop.create_shop(sa.create_engine(postgres_url), SEED)
    landed = {}
    for backend in ("connectorx", "pyarrow"):
        name = f"shop_{backend}"
        defs = build_source(
            SqlDatabaseSource, tmp_path / name, _attributes(postgres_url, backend=backend)
        )
        materialize(defs, partition_key="2026-11-03", resources=resources, instance=instance)
        landed[backend] = warehouse.query(
            f"select * exclude (_loaded_at) from {name}.orders order by id"  # noqa: S608
        )
    assert len(landed["connectorx"]) == len(_source_ids(postgres_url, shop.orders, "2026-11-03"))
    assert landed["connectorx"] == landed["pyarrow"]


def test_a_backfill_puts_each_days_own_figures_and_no_run_wide_one_on_a_partition(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text("create table visits (id int primary key, at timestamptz)"))
        rows = [("2026-11-01", 1), ("2026-11-02", 4), ("2026-11-03", 7)]
        ids = iter(range(1, 100))
        for day, count in rows:
            for _ in range(count):
                connection.execute(
                    sa.text("insert into visits values (:id, :at)"),
                    {"id": next(ids), "at": f"{day}T12:00:00+00"},
                )
        # Rows no partition can hold: a table-wide figure, not any one day's.
        connection.execute(sa.text("insert into visits values (98, null), (99, null)"))
    engine.dispose()
    defs = build_source(
        SqlDatabaseSource,
        tmp_path / "shop",
        {
            "connection": postgres_url,
            "cursor": "at",
            "tables": [{"name": "visits"}],
            "batch": {"every": "day", "start": "2026-11-01"},
        },
    )
    result = materialize(
        defs,
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-11-01",
            "dagster/asset_partition_range_end": "2026-11-03",
        },
    )

    materializations = result.asset_materializations_for_node("shop__visits")
    events = {event.partition: event.metadata for event in materializations}
    assert {day: meta["dagster/row_count"].value for day, meta in events.items()} == dict(rows)
    assert {day: meta["rows_by_table"].value for day, meta in events.items()} == {
        day: {"visits": count} for day, count in rows
    }
    assert sum(meta["dagster/row_count"].value for meta in events.values()) == 12
    for meta in events.values():
        # Figures of the whole run would repeat on each day and sum to nonsense.
        assert not {"run_rows", "rows_null_cursor", "duration_seconds"} & set(meta)
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks["unplaced_rows"].metadata["rows_null_cursor"].value == 2
    (warning,) = [
        e.message for e in instance.all_logs(result.run_id) if "NULL cursor" in (e.message or "")
    ]
    # The fix names what this table has, not a `created_at` it does not have.
    assert warning.endswith(
        "Fix: table 'visits' has no other column of the cursor's type to fall back on: give "
        "those rows a at, or add such a column and list it after at in "
        f"{tmp_path / 'shop' / 'defs.yaml'}"
    )
    assert checks["rows_reconcile"].metadata["rows_landed"].value == 12


def test_rows_before_the_first_partition_are_reported_with_the_start_that_holds_them(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("create table visits (id int primary key, at timestamptz)")
        connection.exec_driver_sql(
            "insert into visits values (1, '2026-10-30 08:00+00'), (2, '2026-10-31 23:59+00'), "
            "(3, '2026-11-01 00:00+00'), (4, '2026-11-01 12:00+00')"
        )
    engine.dispose()
    attributes = {
        "connection": postgres_url,
        "cursor": "at",
        "tables": [{"name": "visits"}],
        "batch": {"every": "day", "start": "2026-11-01"},
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)

    result = materialize(defs, partition_key="2026-11-01", resources=resources, instance=instance)

    # Before: the two October rows were never landed by any partition, and nothing said so.
    assert warehouse.query("select id from shop.visits order by id") == [(3,), (4,)]
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert not checks["unplaced_rows"].passed
    assert checks["unplaced_rows"].metadata["rows_before_start"].value == 2
    metadata = result.asset_materializations_for_node("shop__visits")[0].metadata
    assert metadata["rows_before_start"].value == 2
    (warning,) = [
        e.message for e in instance.all_logs(result.run_id) if "before the" in (e.message or "")
    ]
    assert warning == (
        "shop.visits: 2 source rows have a cursor (at) before the first partition's start "
        "(2026-11-01 00:00), so no partition can hold them and they were not landed; the "
        "earliest is 2026-10-30 08:00:00+00:00. Fix: set `batch.start` in "
        f"{tmp_path / 'shop' / 'defs.yaml'} to 2026-10-30 or earlier, then backfill the new "
        "partitions"
    )
