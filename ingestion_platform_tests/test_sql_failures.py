"""Failed runs leave the warehouse as it was; bad declarations and missing peers say what to fix."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dlt.common.configuration.container import Container

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source, failure_message, materialize

SEED = shop.ShopSeed(customers=20, orders=300, events=10, days=4)
DAY = "2026-11-02"


def _attributes(url: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "connection": url,
        "cursor": "updated_at",
        "tables": [{"name": "orders", "primary_key": ["id"]}],
        "batch": {"every": "day", "start": "2026-11-01"},
        **overrides,
    }


def _snapshot(warehouse: Warehouse) -> list[tuple]:
    return warehouse.query("select * from shop.orders order by id")


def test_failing_mid_load_leaves_the_partition_as_it_was(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(postgres_url)
    shop.create_shop(engine, SEED)
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(postgres_url))
    materialize(defs, partition_key=DAY, resources=resources, instance=instance)
    before = _snapshot(warehouse)
    assert len(before) > 50

    # The source changes `amount` to text and one value cannot become a decimal any more:
    # extraction succeeds, and the load into the existing DECIMAL column fails part-way.
    with engine.begin() as connection:
        connection.execute(sa.text("alter table orders alter column amount type text"))
        connection.execute(sa.text("update orders set amount = '1.00'"))
        connection.execute(
            sa.text("update orders set amount = 'n/a' where id = :id"), {"id": before[-1][0]}
        )
    result = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )

    assert not result.success
    assert _snapshot(warehouse) == before


def test_unreachable_database_fails_naming_the_source_without_the_password(
    tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    url = "postgresql://loader:s3cret-pw@127.0.0.1:1/shop"
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(url))
    result = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )

    message = failure_message(result)
    assert message == (
        "ingestion_platform.sources.sql.connectors.sql_database.SourceDatabaseError: "
        "source 'shop': "
        "cannot connect to postgresql://loader:***@127.0.0.1:1/shop: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused. Fix: check '
        f"that the database is up and that `connection` in {tmp_path / 'shop' / 'defs.yaml'} "
        "points at it"
    )
    assert "s3cret-pw" not in str(result.all_events)
    assert not warehouse.table_exists("shop", "orders")


def test_unknown_table_names_the_file_the_field_and_the_tables_there_are(
    sqlite_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    shop.create_shop(sa.create_engine(sqlite_url), SEED)
    attributes = _attributes(sqlite_url, tables=[{"name": "orders"}, {"name": "ordres"}])
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    result = materialize(
        defs,
        partition_key=DAY,
        resources=resources,
        instance=instance,
        selection=["shop/ordres"],
        raise_on_error=False,
    )
    assert failure_message(result) == (
        f"ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'shop' / 'defs.yaml'}: tables[1].name: table 'ordres' does not exist in "
        f"{sqlite_url}. Fix: use one of: customers, order_events, orders."
    )


def test_missing_cursor_column_names_the_field_and_the_columns_there_are(
    sqlite_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    shop.create_shop(sa.create_engine(sqlite_url), SEED)
    defs = build_source(
        SqlDatabaseSource, tmp_path / "shop", _attributes(sqlite_url, cursor="changed_at")
    )
    result = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )
    assert failure_message(result).endswith(
        "defs.yaml: cursor: column 'changed_at' of table 'orders' does not exist in "
        f"{sqlite_url}. Fix: use one of: amount, customer_id, id, status, updated_at."
    )


def test_missing_environment_variable_fails_only_the_asset_that_needs_it(
    tmp_path: Path, resources: dict, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOP_DB_URL", raising=False)
    # Building the definitions needs nothing set...
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes({"env": "SHOP_DB_URL"}))
    # ...running the asset says which variable is missing, for which source.
    result = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )
    assert failure_message(result).endswith(
        "defs.yaml: connection: environment variable SHOP_DB_URL is not set (source 'shop'). "
        "Fix: export SHOP_DB_URL before running this source's assets."
    )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"batch": {"every": "fortnight", "start": "2026-11-01"}},
            "Input should be 'minute', 'hour', 'day', 'week' or 'month'",
        ),
        ({"batch": {"rows": -5}}, "batch.rows: must be a positive number of rows, got -5"),
        (
            {"batch": {"every": "day"}},
            "batch.start: a time batch needs a first window, e.g. `start: 2026-01-01`",
        ),
        (
            {"batch": {"rows": 10, "every": "day", "start": "2026-11-01"}},
            "batch: set exactly one boundary, found ['every', 'rows']",
        ),
    ],
)
def test_bad_batch_declarations_are_rejected_with_the_fix(
    tmp_path: Path, attributes: dict[str, Any], message: str
) -> None:
    with pytest.raises(Exception) as raised:
        build_source(SqlDatabaseSource, tmp_path / "shop", _attributes("sqlite://", **attributes))
    assert message in str(raised.value)


def test_a_table_without_cursor_is_rejected_when_definitions_load(tmp_path: Path) -> None:
    attributes = _attributes("sqlite://", cursor=None, tables=[{"name": "orders"}])
    with pytest.raises(ValueError) as raised:
        build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    assert str(raised.value) == (
        f"{tmp_path / 'shop' / 'defs.yaml'}: tables[0].cursor: table 'orders' has no cursor "
        "column, so its batches cannot be sliced. Fix: set `cursor:` on the table (or for the "
        "whole source) to a column that grows with new rows, e.g. updated_at or id."
    )


def test_new_and_widened_source_columns_evolve_the_warehouse_table(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(postgres_url)
    shop.create_shop(engine, SEED)
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(postgres_url))
    materialize(defs, partition_key="2026-11-01", resources=resources, instance=instance)

    with engine.begin() as connection:
        connection.execute(sa.text("alter table orders add column coupon varchar(12)"))
        connection.execute(sa.text("alter table orders alter column customer_id type bigint"))
        connection.execute(sa.text("update orders set coupon = 'WELCOME', customer_id = 5e9"))
    result = materialize(defs, partition_key=DAY, resources=resources, instance=instance)

    (event,) = result.asset_materializations_for_node("shop__orders")
    assert event.metadata["new_columns"].value == {"orders": ["coupon"]}
    assert event.metadata["schema_changed"].value is True
    rows = warehouse.query(
        "select _batch_key, count(*), count(coupon), max(customer_id) from shop.orders "
        "group by 1 order by 1"
    )
    assert rows[0][0] == "2026-11-01" and rows[0][2] == 0
    assert rows[1][0] == DAY and rows[1][2] == rows[1][1] and rows[1][3] == 5_000_000_000


def test_a_source_failing_mid_read_rolls_back_the_batches_already_written(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    engine = sa.create_engine(postgres_url)
    shop.create_shop(engine, SEED)
    view = "create or replace view order_ratios as select id, {ratio} as ratio from orders"
    with engine.begin() as connection:
        connection.execute(sa.text(view.format(ratio="100 / (id + 1000)")))
    attributes = {
        "connection": postgres_url,
        "tables": [{"name": "order_ratios", "cursor": "id"}],
        "batch": {"rows": 300},
        "chunk_size": 20,
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    instance.add_dynamic_partitions("shop__order_ratios", ["..300"])
    materialize(defs, partition_key="..300", resources=resources, instance=instance)
    before = warehouse.query("select * from shop.order_ratios order by id")
    assert len(before) == 300

    # Row 250 now fails in PostgreSQL, after 12 chunks of 20 rows have reached DuckDB.
    with engine.begin() as connection:
        connection.execute(sa.text(view.format(ratio="100 / (id - 250)")))
    result = materialize(
        defs, partition_key="..300", resources=resources, instance=instance, raise_on_error=False
    )

    assert failure_message(result) == (
        "ingestion_platform.sources.sql.connectors.sql_database.SourceDatabaseError: "
        "source 'shop': "
        "reading table 'order_ratios' failed: division by zero. Nothing was landed"
    )
    assert warehouse.query("select * from shop.order_ratios order by id") == before


def test_a_failed_landing_leaves_no_dlt_context_behind(
    postgres_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    # dlt's resource iterator injects contexts until it is closed; left open by a failed run,
    # it would be closed later by the garbage collector, over whatever dlt runs then.
    engine = sa.create_engine(postgres_url)
    shop.create_shop(engine, SEED)
    with engine.begin() as connection:
        connection.execute(
            sa.text("create view bad_orders as select id, 1 / (id - id) as r from orders")
        )
    attributes = {
        "connection": postgres_url,
        "tables": [{"name": "bad_orders", "cursor": "id"}],
        "batch": {"rows": 100},
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    instance.add_dynamic_partitions("shop__bad_orders", ["..100"])

    result = materialize(
        defs, partition_key="..100", resources=resources, instance=instance, raise_on_error=False
    )

    assert "division by zero" in failure_message(result)
    injected = {spec.__name__ for spec in Container().thread_contexts[threading.get_ident()][0]}
    assert not injected & {"StateInjectableContext", "SourceInjectableContext"}


def _dataset_state(warehouse: Warehouse) -> dict[str, Any]:
    """The warehouse's tables, columns and dlt's stored schema versions, for 'shop'."""
    tables = warehouse.query(
        "select table_name, list(column_name order by ordinal_position) "
        "from information_schema.columns where table_schema = 'shop' group by 1 order by 1"
    )
    versions = (
        warehouse.query("select version_hash from shop._dlt_version order by 1")
        if any(name == "_dlt_version" for name, _ in tables)
        else []
    )
    return {"tables": tables, "versions": versions}


def _ratios(
    url: str, tmp_path: Path, instance: Any, backend: str, divisor: str
) -> tuple[sa.Engine, dg.Definitions]:
    """A view `ratios` over six readings (total / divisor), declared as one 6-row slice."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"create table readings as select id, 10 * id as total, {divisor} as divisor "  # noqa: S608
                "from generate_series(1, 6) as id"
            )
        )
        connection.execute(
            sa.text("create view ratios as select id, total / divisor as ratio from readings")
        )
    attributes = {
        "connection": url,
        "tables": [{"name": "ratios", "cursor": "id"}],
        "batch": {"rows": 100},
        "backend": backend,
    }
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)
    instance.add_dynamic_partitions("shop__ratios", ["..6"])
    return engine, defs


@pytest.mark.parametrize("backend", ["auto", "connectorx", "pyarrow"])
def test_a_failed_first_landing_leaves_no_table_behind_and_the_next_one_creates_it(
    backend: str,
    postgres_url: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance,
) -> None:
    engine, defs = _ratios(postgres_url, tmp_path, instance, backend, divisor="id - 3")

    failed = materialize(
        defs, partition_key="..6", resources=resources, instance=instance, raise_on_error=False
    )

    assert failure_message(failed).endswith(
        "source 'shop': reading table 'ratios' failed: division by zero. Nothing was landed"
    )
    # dlt's schema step had created shop.ratios and its own tables; all of it is gone.
    assert warehouse.query(
        "select count(*) from information_schema.schemata where schema_name = 'shop'"
    ) == [(0,)]

    with engine.begin() as connection:
        connection.execute(sa.text("update readings set divisor = 5 where divisor = 0"))
    for _ in range(2):
        landed = materialize(defs, partition_key="..6", resources=resources, instance=instance)
        assert landed.success
        assert warehouse.query("select id, ratio from shop.ratios order by id") == [
            (1, -5),
            (2, -20),
            (3, 6),
            (4, 40),
            (5, 25),
            (6, 20),
        ]


@pytest.mark.parametrize("backend", ["auto", "connectorx"])
def test_a_failed_landing_that_added_a_column_leaves_the_table_as_it_was(
    backend: str,
    postgres_url: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance,
) -> None:
    engine, defs = _ratios(postgres_url, tmp_path, instance, backend, divisor="id + 1")
    materialize(defs, partition_key="..6", resources=resources, instance=instance)
    before = _dataset_state(warehouse)
    rows = warehouse.query("select * from shop.ratios order by id")

    # The view gains a column, and one row now fails in PostgreSQL.
    with engine.begin() as connection:
        connection.execute(sa.text("update readings set divisor = 0 where id = 4"))
        connection.execute(
            sa.text(
                "create or replace view ratios as "
                "select id, total / divisor as ratio, total as grand_total from readings"
            )
        )
    failed = materialize(
        defs, partition_key="..6", resources=resources, instance=instance, raise_on_error=False
    )

    assert "division by zero. Nothing was landed" in failure_message(failed)
    assert _dataset_state(warehouse) == before
    assert warehouse.query("select * from shop.ratios order by id") == rows

    with engine.begin() as connection:
        connection.execute(sa.text("update readings set divisor = 2 where id = 4"))
    landed = materialize(defs, partition_key="..6", resources=resources, instance=instance)

    (event,) = landed.asset_materializations_for_node("shop__ratios")
    assert event.metadata["new_columns"].value == {"ratios": ["grand_total"]}
    assert warehouse.query("select id, ratio, grand_total from shop.ratios order by id") == [
        (1, 5, 10),
        (2, 6, 20),
        (3, 7, 30),
        (4, 20, 40),
        (5, 8, 50),
        (6, 8, 60),
    ]
