"""The SQL lag measure: rows at the source that no partition holds, counted at the source."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.lag import SOURCE_LAG, LagRule, evaluate
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform.sources.sql.lag import sql_lag_measure
from ingestion_platform_tests.sources import build_source, materialize

# (id, cursor): 2 rows on Nov 1st, 3 on the 2nd, 4 on the 3rd, 1 with no cursor at all.
ROWS = [(1, "2026-11-01 05:00"), (2, "2026-11-01 06:00")]
ROWS += [(3 + i, f"2026-11-02 0{i + 1}:00") for i in range(3)]
ROWS += [(6 + i, f"2026-11-03 0{i + 1}:00") for i in range(4)]
ROWS += [(10, None)]


@pytest.fixture(params=["postgres", "mariadb"])
def events_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        # A reserved word as the cursor column: identifiers must be quoted.
        connection.execute(
            sa.text(
                'create table "events" (id int primary key, "order" timestamp null)'
                if request.param == "postgres"
                else "create table `events` (id int primary key, `order` datetime null)"
            )
        )
        connection.execute(
            sa.text("insert into events values (:id, :at)"),
            [{"id": i, "at": at} for i, at in ROWS],
        )
    engine.dispose()
    return url


def _attributes(url: str, cursor: str, batch: dict) -> dict:
    return {"connection": url, "tables": [{"name": "events", "cursor": cursor}], "batch": batch}


def _measure(tmp_path: Path, url: str, defs: dg.Definitions, cursor: str):
    (asset,) = defs.assets  # type: ignore[misc]
    return sql_lag_measure(
        source=SourceContext("shop", str(tmp_path / "shop" / "defs.yaml")),
        connection=url,
        table="events",
        db_schema=None,
        cursor=[cursor],
        asset_key=asset.key,
        partitions_def=asset.partitions_def,
    )


def test_a_time_batch_counts_the_rows_of_closed_windows_that_did_not_land(
    events_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    batch = {"every": "day", "start": "2026-11-01"}
    defs = build_source(
        SqlDatabaseSource, tmp_path / "shop", _attributes(events_url, "order", batch)
    )
    assert any(SOURCE_LAG == check.name for check in defs.asset_checks[0].check_specs)  # type: ignore[index]
    materialize(defs, partition_key="2026-11-01", resources=resources, instance=instance)
    measure = _measure(tmp_path, events_url, defs, "order")

    lag = measure(instance)

    # Nov 2nd and 3rd closed long ago and never landed: their 7 rows wait, the oldest since 01:00.
    assert (lag.waiting, lag.unit) == (7, "rows")
    assert lag.oldest_waiting_at == datetime(2026, 11, 2, 1, tzinfo=UTC)

    materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)
    materialize(defs, partition_key="2026-11-03", resources=resources, instance=instance)
    lag = measure(instance)
    assert (lag.waiting, lag.oldest_waiting_at) == (0, None)


def test_a_size_batch_counts_the_rows_past_the_newest_cut(
    events_url: str, tmp_path: Path, instance
) -> None:
    defs = build_source(
        SqlDatabaseSource, tmp_path / "shop", _attributes(events_url, "id", {"rows": 4})
    )
    measure = _measure(tmp_path, events_url, defs, "id")
    (asset,) = defs.assets  # type: ignore[misc]
    name = asset.partitions_def.name  # type: ignore[union-attr]

    assert measure(instance).waiting == 10  # nothing cut yet: every row with a cursor
    instance.add_dynamic_partitions(name, ["..4", "4..8"])
    lag = measure(instance)
    assert (lag.waiting, lag.unit, lag.oldest_waiting_at) == (2, "rows", None)  # ids 9, 10


def test_an_unreachable_database_fails_the_measure_naming_the_source(
    tmp_path: Path, instance
) -> None:
    url = "postgresql://nobody:secret@127.0.0.1:9/test"
    batch = {"every": "day", "start": "2026-11-01"}
    defs = build_source(SqlDatabaseSource, tmp_path / "shop", _attributes(url, "order", batch))
    measure = _measure(tmp_path, url, defs, "order")

    with pytest.raises(SourceFailure) as failure:
        measure(instance)

    message = str(failure.value)
    assert message.startswith(
        f"source 'shop' ({tmp_path / 'shop' / 'defs.yaml'}): cannot measure the lag of table "
        "'events' at postgresql://nobody:***@127.0.0.1:9/test: cannot connect to "
    ), message
    assert "secret" not in message


def _insert(url: str, *rows: tuple[int, str]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("insert into events values (:id, :at)"), [{"id": i, "at": at} for i, at in rows]
        )
    engine.dispose()


def test_rows_that_reach_a_landed_window_later_wait_naming_the_partition_to_land_again(
    events_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    batch = {"every": "day", "start": "2026-11-01"}
    defs = build_source(
        SqlDatabaseSource, tmp_path / "shop", _attributes(events_url, "order", batch)
    )
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        materialize(defs, partition_key=day, resources=resources, instance=instance)
    measure = _measure(tmp_path, events_url, defs, "order")
    assert measure(instance).waiting == 0

    # A transaction that committed after Nov 2nd had landed (or a replica that was behind).
    _insert(events_url, (11, "2026-11-02 23:30"), (12, "2026-11-02 23:45"))
    lag = measure(instance)

    assert (lag.waiting, lag.stranded) == (2, 2)
    assert lag.oldest_waiting_at == datetime(2026, 11, 3, tzinfo=UTC)  # the window's end
    assert lag.detail == {"late_rows": 2, "late_partitions": "2026-11-02"}
    assert lag.note == (
        "2 of them reached partition(s) 2026-11-02 after they landed (a transaction that "
        "committed late, or a replica behind). Fix: materialise 2026-11-02 again"
    )
    rule = LagRule(timedelta(hours=1), timedelta(days=1))
    at = datetime(2026, 11, 3, 2, tzinfo=UTC)
    evaluation, _ = evaluate(dg.AssetKey(["shop", "events"]), measure, instance, rule, at)
    assert evaluation.description == (
        "2 rows wait at the source; the oldest for 2:00:00, longer than the batch allows "
        "(1:00:00); "
        f"{lag.note}"
    )

    materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)
    assert measure(instance).waiting == 0


def test_a_row_that_reaches_a_landed_cut_later_fails_however_few_wait(
    events_url: str, tmp_path: Path, resources: dict, instance
) -> None:
    defs = build_source(
        SqlDatabaseSource, tmp_path / "shop", _attributes(events_url, "id", {"rows": 4})
    )
    (asset,) = defs.assets  # type: ignore[misc]
    instance.add_dynamic_partitions(asset.partitions_def.name, ["..4", "4..8"])  # type: ignore[union-attr]
    for key in ("..4", "4..8"):
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    # An id below the newest cut, committed after its slice landed: no later cut reads it.
    _insert(events_url, (0, "2026-11-01 04:00"))
    measure = _measure(tmp_path, events_url, defs, "id")

    lag = measure(instance)

    assert (lag.waiting, lag.stranded, lag.detail["late_partitions"]) == (3, 1, "..4")  # 0, 9, 10
    rule = LagRule(timedelta(minutes=1), timedelta(minutes=3), whole_batch=4, unit="rows")
    assert rule.judge(lag, timedelta(minutes=2)) == (False, dg.AssetCheckSeverity.WARN)
    # Without the late row, 2 pending rows are less than a batch of 4: nothing to flag.
    pending = dataclasses.replace(lag, waiting=2, stranded=0)
    assert rule.judge(pending, timedelta(minutes=2)) == (True, dg.AssetCheckSeverity.WARN)
