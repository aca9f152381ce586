"""Size-batched SQL sources: a sensor cuts a partition per N new rows; each is replayable."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_run_for_test

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source, materialize, start_only_run

SEED = shop.ShopSeed(customers=10, orders=100, events=1250, days=3)
PARTITIONS = "shop__order_events"


def _attributes(url: str, **batch: Any) -> dict[str, Any]:
    return {
        "connection": url,
        "tables": [{"name": "order_events", "cursor": "id", "primary_key": ["id"]}],
        "batch": batch or {"rows": 500},
    }


def _evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate the size sensor and throw its tick away, as `dagster sensor preview` does."""
    (sensor,) = [s for s in defs.sensors or [] if s.name == "shop__size_sensor"]
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def _add_partitions(result: dg.SensorResult, instance: dg.DagsterInstance) -> None:
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def _tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
) -> dg.SensorResult:
    """Evaluate the size sensor and commit its tick as the daemon does: first the partitions
    it adds, then a run per request with its tags and run key (in `status`)."""
    result = _evaluate(defs, instance, cursor)
    _add_partitions(result, instance)
    for request in result.run_requests or []:
        tags = {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: "shop__size_sensor"}
        create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags, status=status)
    return result


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def events_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(f"{request.param}_url")
    shop.create_shop(sa.create_engine(url), SEED)
    return url


def test_sensor_cuts_a_partition_per_full_batch_and_waits_for_the_rest(
    events_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(events_url))

    # Two full batches pending: the runs are behind, so one run lands both as one slice.
    first = _tick(defs, instance)
    assert [r.partition_key for r in first.run_requests] == ["..1000"]
    assert [r.run_key for r in first.run_requests] == [f"{PARTITIONS}:..1000"]
    # 250 rows remain: below the threshold, so the next tick cuts nothing.
    second = _tick(defs, instance, first.cursor)
    assert second.run_requests == []
    assert second.skip_reason is not None
    assert "less than 500 rows pending" in second.skip_reason.skip_message

    engine = sa.create_engine(events_url)
    with engine.begin() as connection:
        shop.append_events(connection, 300, first_id=1251, rng=random.Random(1), seed=SEED)
    third = _tick(defs, instance, second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["1000..1500"]
    assert instance.get_dynamic_partitions(PARTITIONS) == ["..1000", "1000..1500"]


def test_a_cut_is_final_only_with_its_run(
    sqlite_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    shop.create_shop(sa.create_engine(sqlite_url), SEED)
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(sqlite_url))
    cut = ["..1000"]

    preview = _evaluate(defs, instance)  # `dagster sensor preview`: nothing is kept
    assert [r.partition_key for r in preview.run_requests] == cut
    # The daemon adds the tick's partitions, then dies before it creates the runs.
    died = _evaluate(defs, instance)
    _add_partitions(died, instance)

    again = _tick(defs, instance)  # the cursor the daemon last committed
    assert [(r.partition_key, r.run_key) for r in again.run_requests] == [
        (r.partition_key, r.run_key) for r in died.run_requests
    ]
    assert instance.get_dynamic_partitions(PARTITIONS) == cut
    with sa.create_engine(sqlite_url).begin() as connection:
        shop.append_events(connection, 300, first_id=1251, rng=random.Random(1), seed=SEED)
    after = _tick(defs, instance, again.cursor)  # final now: only the new rows
    assert [r.partition_key for r in after.run_requests] == ["1000..1500"]
    assert instance.get_dynamic_partitions(PARTITIONS) == [*cut, "1000..1500"]


def test_new_rows_wait_while_a_run_of_the_table_waits_then_land_in_one_run(
    sqlite_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    shop.create_shop(sa.create_engine(sqlite_url), SEED)
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(sqlite_url))
    queued = dg.DagsterRunStatus.NOT_STARTED  # created, not started: as waiting as queued
    first = _tick(defs, instance, status=queued)
    assert [r.partition_key for r in first.run_requests] == ["..1000"]
    assert first.run_requests[0].tags == {"ingestion_platform/stream": PARTITIONS}

    with sa.create_engine(sqlite_url).begin() as connection:
        shop.append_events(connection, 1000, first_id=1251, rng=random.Random(1), seed=SEED)
    held = _tick(defs, instance, first.cursor)
    assert held.run_requests == []
    assert held.skip_reason is not None
    assert held.skip_reason.skip_message == (
        f"{PARTITIONS}: holding new cuts while 1 run(s) of it wait to start; what is "
        "pending then lands in one run"
    )
    start_only_run(instance)
    # Started: the 1,250 rows that waited (two full batches and a part) land in one run.
    after = _tick(defs, instance, held.cursor)
    assert [r.partition_key for r in after.run_requests] == ["1000..2000"]
    assert instance.get_dynamic_partitions(PARTITIONS) == ["..1000", "1000..2000"]


def test_max_wait_cuts_a_partial_batch_once_it_has_waited_long_enough(
    sqlite_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    shop.create_shop(sa.create_engine(sqlite_url), SEED)
    attributes = _attributes(sqlite_url, rows=1000, max_wait="10m")
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", attributes)

    first = _tick(defs, instance)
    assert [r.partition_key for r in first.run_requests] == ["..1000"]
    waiting = json.loads(first.cursor or "{}")
    assert set(waiting) == {"order_events"}
    # The cursor reads as a time in the UI, not epoch seconds.
    since = datetime.fromisoformat(waiting["order_events"])
    assert since.tzinfo is not None and abs(since.timestamp() - time.time()) < 60

    not_yet = _tick(defs, instance, first.cursor)
    assert not_yet.run_requests == []
    # A cursor stored as epoch seconds (before timestamps) is still read.
    overdue = json.dumps({"order_events": time.time() - 601})
    late = _tick(defs, instance, overdue)
    assert [r.partition_key for r in late.run_requests] == ["1000..1250"]
    assert json.loads(late.cursor or "{}") == {}


def test_size_partitions_land_exactly_their_rows_and_replay_identically(
    events_url: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(events_url))
    first = _tick(defs, instance)
    with sa.create_engine(events_url).begin() as connection:
        shop.append_events(connection, 300, first_id=1251, rng=random.Random(2), seed=SEED)
    keys = [r.partition_key for r in [*first.run_requests, *_tick(defs, instance).run_requests]]
    assert keys == ["..1000", "1000..1500"]
    for key in keys:
        materialize(defs, partition_key=key, resources=resources, instance=instance)

    def landed(key: str) -> list[int]:
        rows = warehouse.query(
            "select id from shop.order_events where _batch_key = ? order by id", (key,)
        )
        return [row[0] for row in rows]

    assert landed("..1000") == list(range(1, 1001))
    assert landed("1000..1500") == list(range(1001, 1501))

    # Days later, more rows exist; replaying the first slice still reads exactly 1..1000.
    with sa.create_engine(events_url).begin() as connection:
        shop.append_events(connection, 300, first_id=1551, rng=random.Random(3), seed=SEED)
    materialize(defs, partition_key="..1000", resources=resources, instance=instance)
    assert landed("..1000") == list(range(1, 1001))
    assert warehouse.count("shop", "order_events") == 1500
