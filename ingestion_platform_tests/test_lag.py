"""The source_lag check: what waits at a source, judged against its batch, with and without runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.core.health import HealthSpec
from ingestion_platform.core.lag import SOURCE_LAG, LagRule, SourceLag, lag_defs, lag_tick
from ingestion_platform.core.window_lag import closed_windows_lag

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KEY = dg.AssetKey(["src", "orders"])
DAILY = BatchSpec(every="day", start="2026-11-01")


def _tick(batch: BatchSpec, lag: SourceLag | Exception, cursor: str | None = None, now=NOW):
    def measure(instance: dg.DagsterInstance) -> SourceLag:
        if isinstance(lag, Exception):
            raise lag
        return lag

    rule = LagRule.of(batch, HealthSpec(), sensor_interval_seconds=30)
    with dg.instance_for_test() as instance:
        result = lag_tick(instance, cursor, {KEY: measure}, rule, now)
    evaluation, observation = result.asset_events
    return evaluation, observation, result.cursor


@pytest.mark.parametrize(
    ("waited", "passed", "severity"),
    [
        (timedelta(hours=2), True, dg.AssetCheckSeverity.WARN),
        # A day's batch plus its grace (a quarter of a day) is allowed ...
        (timedelta(hours=30, minutes=1), False, dg.AssetCheckSeverity.WARN),
        # ... and a day later it is an error.
        (timedelta(hours=54, minutes=1), False, dg.AssetCheckSeverity.ERROR),
    ],
)
def test_a_time_batch_warns_past_its_period_and_grace_then_fails(
    waited: timedelta, passed: bool, severity: dg.AssetCheckSeverity
) -> None:
    evaluation, observation, _ = _tick(DAILY, SourceLag(3, "rows", NOW - waited))

    assert (evaluation.passed, evaluation.severity) == (passed, severity)
    assert evaluation.check_name == SOURCE_LAG
    assert observation.metadata["waiting_rows"].value == 3
    assert observation.metadata["oldest_waiting_seconds"].value == waited.total_seconds()
    if not passed:
        assert evaluation.description.startswith("3 rows wait at the source; the oldest for ")


def test_a_size_batch_without_max_wait_warns_only_once_a_whole_batch_waits() -> None:
    batch = BatchSpec(rows=100)
    old = NOW - timedelta(hours=3)

    partial, _, _ = _tick(batch, SourceLag(99, "rows", old))
    whole, _, _ = _tick(batch, SourceLag(100, "rows", old))

    assert partial.passed
    assert not whole.passed
    assert whole.description == (
        "100 rows wait at the source; the oldest for 3:00:00, longer than the batch allows "
        "(0:05:30)"
    )


def test_an_age_the_source_cannot_tell_counts_from_the_first_tick_that_saw_it() -> None:
    batch = BatchSpec(files=1, max_wait="1m")
    first, _, cursor = _tick(batch, SourceLag(1, "files", None))
    assert first.passed
    assert json.loads(cursor) == {"src/orders": NOW.isoformat()}

    later, _, cursor = _tick(batch, SourceLag(1, "files", None), cursor, NOW + timedelta(hours=1))
    assert not later.passed

    drained, _, cursor = _tick(batch, SourceLag(0, "files", None), cursor, NOW + timedelta(hours=2))
    assert drained.passed
    assert json.loads(cursor) == {}


def test_a_source_that_cannot_be_measured_warns_with_the_reason() -> None:
    evaluation, _, _ = _tick(DAILY, ConnectionError("shop: cannot reach 127.0.0.1:1 (refused)"))

    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == (
        "could not measure the source: shop: cannot reach 127.0.0.1:1 (refused)"
    )


def test_the_check_runs_from_the_ui_and_the_sensor_reports_it_without_a_run() -> None:
    @dg.asset(key=KEY)
    def orders() -> None:
        """A landing table."""

    waiting = SourceLag(2, "files", NOW - timedelta(days=3))
    defs = dg.Definitions.merge(
        dg.Definitions(assets=[orders]),
        lag_defs(
            source="src",
            measures={KEY: lambda instance: waiting},
            batch=DAILY,
            health=HealthSpec(),
            sensor_interval_seconds=30,
        ),
    )
    with dg.instance_for_test() as instance:
        checks = defs.resolve_asset_graph().asset_check_keys
        assert dg.AssetCheckKey(KEY, SOURCE_LAG) in checks
        result = dg.materialize([orders, *defs.asset_checks], instance=instance, selection=[KEY])
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed

        sensor = defs.resolve_sensor_def("src__lag")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        tick = sensor(dg.build_sensor_context(instance=instance))
        assert [type(event).__name__ for event in tick.asset_events] == [
            "AssetCheckEvaluation",
            "AssetObservation",
        ]


def test_health_lag_false_leaves_the_source_without_the_check() -> None:
    defs = lag_defs(
        source="src",
        measures={KEY: lambda instance: SourceLag(0, "rows")},
        batch=DAILY,
        health=HealthSpec(lag=False),
        sensor_interval_seconds=30,
    )
    assert list(defs.sensors or []) == []


def _landed(instance: dg.DagsterInstance, *days: str) -> None:
    for day in days:
        instance.report_runless_asset_event(dg.AssetMaterialization(KEY, partition=day))


def test_closed_windows_that_did_not_land_since_the_first_landing_wait() -> None:
    windows = DAILY.partitions_def("unused")
    with dg.instance_for_test() as instance:
        _landed(instance, "2026-11-28", "2026-11-29", "2026-12-01")

        lag = closed_windows_lag(instance, KEY, windows, NOW)

    # 11-30, 12-02 and 12-03 closed without landing; history before 11-28 is not lag.
    assert (lag.waiting, lag.unit) == (3, "windows")
    assert lag.oldest_waiting_at == datetime(2026, 11, 30, tzinfo=UTC)
    assert lag.detail == {"oldest_window": "2026-11-30"}


def test_a_table_that_never_landed_counts_the_last_few_windows_only() -> None:
    windows = DAILY.partitions_def("unused")
    with dg.instance_for_test() as instance:
        lag = closed_windows_lag(instance, KEY, windows, NOW)
        _landed(instance, "2026-12-01", "2026-12-02", "2026-12-03")
        caught_up = closed_windows_lag(instance, KEY, windows, NOW)

    assert (lag.waiting, lag.oldest_waiting_at) == (3, datetime(2026, 12, 1, tzinfo=UTC))
    assert (caught_up.waiting, caught_up.oldest_waiting_at) == (0, None)


def test_every_landing_table_of_every_kind_has_the_source_lag_check() -> None:
    from ingestion_platform.demo.definitions import defs as demo_defs

    graph = demo_defs().resolve_asset_graph()
    tables = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    without = [
        table
        for table in tables
        if dg.AssetCheckKey(dg.AssetKey.from_user_string(table), SOURCE_LAG)
        not in graph.asset_check_keys
    ]
    assert len(tables) >= 9  # one source of each kind at least, most with several tables
    assert without == []
