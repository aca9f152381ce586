"""A source without `tables:` lands every table of its schema, listed by a state refresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster.components.core.component_tree import ComponentTree

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform.sources.sql.connectors.sql_database import SourceDatabaseError
from ingestion_platform_tests.sources import failure_message, materialize

SEED = shop.ShopSeed(customers=30, orders=200, events=10, days=3)
DAY = "2026-11-02"


def _load(folder: Path, attributes: dict[str, Any]) -> tuple[SqlDatabaseSource, Any]:
    """Load the component as `dg` does (`load`, which knows its defs.yaml) and its context."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"type": "ingestion_platform.sources.sql.component.SqlDatabaseSource"}
    (folder / "defs.yaml").write_text(yaml.safe_dump({**document, "attributes": attributes}))
    context = ComponentTree.for_test().load_context.for_path(folder)
    model = SqlDatabaseSource.model().model_validate(attributes)
    return SqlDatabaseSource.load(model, context), context


def _attributes(url: str) -> dict[str, Any]:
    return {
        "connection": url,
        "db_schema": "sales",
        "cursor": "updated_at",
        "batch": {"every": "day", "start": "2026-11-01"},
    }


@pytest.fixture
def sales_url(postgres_url: str) -> str:
    """The shop's three tables in a PostgreSQL schema `sales` (and nothing in `public`)."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text("create schema sales"))
    shop.create_shop(engine.execution_options(schema_translate_map={None: "sales"}), SEED)
    engine.dispose()
    return postgres_url


def test_schema_tables_become_assets_once_the_state_is_refreshed(
    sales_url: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    component, context = _load(tmp_path / "sales", _attributes(sales_url))
    assert component.build_defs_from_state(context, state_path=None).assets is None

    state = tmp_path / "state"
    component.write_state_to_path(state)
    assert json.loads(state.read_text()) == {"tables": ["customers", "order_events", "orders"]}

    defs = component.build_defs_from_state(context, state_path=state)
    assert sorted(a.key.to_user_string() for a in defs.assets) == [
        "sales/customers",
        "sales/order_events",
        "sales/orders",
    ]
    materialize(
        defs,
        partition_key=DAY,
        resources=resources,
        instance=instance,
        selection=["sales/customers", "sales/orders"],
    )
    engine = sa.create_engine(sales_url)
    for table in ("customers", "orders"):
        with engine.connect() as connection:
            expected = (
                connection.execute(
                    sa.text(
                        f"select id from sales.{table} where updated_at >= '{DAY}' "  # noqa: S608
                        "and updated_at < '2026-11-03' order by id"
                    )
                )
                .scalars()
                .all()
            )
        landed = warehouse.query(
            f"select id from sales.{table} where _batch_key = ? order by id",  # noqa: S608
            (DAY,),
        )
        assert len(expected) > 0
        assert [row[0] for row in landed] == expected
    engine.dispose()


def test_a_schema_table_without_the_cursor_column_fails_naming_the_source_cursor(
    sales_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    component, context = _load(tmp_path / "sales", _attributes(sales_url))
    component.write_state_to_path(tmp_path / "state")
    defs = component.build_defs_from_state(context, state_path=tmp_path / "state")
    result = materialize(
        defs,
        partition_key=DAY,
        resources=resources,
        instance=instance,
        selection=["sales/order_events"],
        raise_on_error=False,
    )
    assert failure_message(result) == (
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'sales' / 'defs.yaml'}: cursor: column 'updated_at' of table "
        f"'order_events' does not exist in {sales_url}. Fix: use one of: id, kind, order_id, "
        "recorded_at."
    )


def test_refreshing_against_an_unreachable_database_says_what_to_fix(tmp_path: Path) -> None:
    component, _ = _load(tmp_path / "sales", _attributes("postgresql://u:pw@127.0.0.1:1/x"))
    with pytest.raises(SourceDatabaseError) as raised:
        component.write_state_to_path(tmp_path / "state")
    assert str(raised.value) == (
        "source 'sales': cannot connect to postgresql://u:***@127.0.0.1:1/x: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused. Fix: check '
        f"that the database is up and that `connection` in {tmp_path / 'sales' / 'defs.yaml'} "
        "points at it"
    )
    assert not (tmp_path / "state").exists()


def test_an_empty_schema_is_rejected_at_refresh(postgres_url: str, tmp_path: Path) -> None:
    component, _ = _load(tmp_path / "sales", {**_attributes(postgres_url), "db_schema": "public"})
    with pytest.raises(ValueError) as raised:
        component.write_state_to_path(tmp_path / "state")
    assert str(raised.value) == (
        f"{tmp_path / 'sales' / 'defs.yaml'}: db_schema: schema public of {postgres_url} has "
        "no tables. Fix: point `db_schema` at a schema with tables, or list `tables:`."
    )


def test_listed_tables_build_without_any_state(tmp_path: Path) -> None:
    attributes = {**_attributes("sqlite://"), "tables": [{"name": "orders"}]}
    component, context = _load(tmp_path / "shop", attributes)
    defs = component.build_defs(context)
    assert [a.key for a in defs.assets] == [dg.AssetKey(["shop", "orders"])]
