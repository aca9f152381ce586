"""Health every landing table shows in the UI, as asset checks declared from the source's YAML.

Checks that need the landing's own figures run inside the materialisation (no second run,
no second read of the source):
- `rows_reconcile`: the warehouse holds exactly the rows the run read for its slices, less
  those it quarantined (an ERROR: the landing contract is broken if it fails);
- `schema_drift`: the source gained columns or changed their types (a WARN: dlt has
  already evolved the table, but downstream models may need a look);
- `unplaced_rows`: source rows no slice can hold (a NULL cursor, or one before the first
  time partition) or rows quarantined above the declared share (a WARN).
Freshness is judged against the batch boundary by a Dagster freshness policy on the asset:
a daily source whose newest landing is more than a day and a grace old is flagged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
from dagster._utils.schedules import cron_string_iterator
from pydantic import field_validator

from ingestion_platform.core.batching import BatchSpec, parse_duration
from ingestion_platform.core.quarantine import QuarantineSummary, summarize_quarantine
from ingestion_platform.core.warehouse import Warehouse

if TYPE_CHECKING:
    from ingestion_platform.core.message_landing import StreamLandingReport

ROWS_RECONCILE = "rows_reconcile"
SCHEMA_DRIFT = "schema_drift"
UNPLACED_ROWS = "unplaced_rows"


class HealthSpec(dg.Model):
    """How a source's health checks judge it; every field has a sensible default."""

    # How late past the batch boundary a landing may be before it is flagged (default: a
    # quarter of the batch period, at least 5 minutes).
    freshness_grace: str | None = None
    # Share of rows read that may go to quarantine before it is flagged.
    quarantine_warn_share: float = 0.01
    freshness: bool = True
    # The `source_lag` check and its sensor (core/lag.py), and how often the sensor measures.
    lag: bool = True
    lag_interval: str = "1m"

    @property
    def lag_interval_seconds(self) -> int:
        return parse_duration(self.lag_interval)

    @field_validator("quarantine_warn_share")
    @classmethod
    def _a_share(cls, value: float) -> float:
        # `5` meant as 5 % would never warn; a negative share would warn on every run.
        if not 0 <= value <= 1:
            raise ValueError(
                f"{value:g} is not a share. Fix: write the share of the rows read, from 0 to 1, "
                "e.g. 0.05 for 5 %."
            )
        return value

    @field_validator("lag_interval", "freshness_grace")
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        try:
            positive = value is None or parse_duration(value) > 0
        except ValueError:
            positive = False
        if not positive:
            raise ValueError(
                f"{value!r} is not a positive duration. Fix: write e.g. 90s, 15m or 1h."
            )
        return value


def check_specs(asset_key: dg.AssetKey, quarantines: bool = False) -> list[dg.AssetCheckSpec]:
    """The in-run checks of one landing table."""
    unplaced = (
        "rows quarantined or without a slice (NULL cursor)"
        if quarantines
        else "source rows no slice can hold (a NULL cursor, or one before the first partition)"
    )
    return [
        dg.AssetCheckSpec(
            ROWS_RECONCILE,
            asset=asset_key,
            description="The warehouse holds exactly the rows this run read for its slices.",
        ),
        dg.AssetCheckSpec(
            SCHEMA_DRIFT,
            asset=asset_key,
            description="Columns the source added or retyped since the last landing.",
        ),
        dg.AssetCheckSpec(UNPLACED_ROWS, asset=asset_key, description=f"Counts {unplaced}."),
    ]


def asset_health(
    asset_key: dg.AssetKey,
    batch: BatchSpec,
    health: HealthSpec,
    sensor_interval_seconds: int,
    quarantines: bool = False,
) -> dict[str, object]:
    """The health arguments of a landing asset's decorator: its checks and freshness."""
    return {
        "check_specs": check_specs(asset_key, quarantines),
        "freshness_policy": freshness_policy(batch, health, sensor_interval_seconds),
    }


def landing_checks(
    asset_key: dg.AssetKey,
    *,
    read: int,
    quarantined: int,
    landed: int,
    new_columns: Sequence[str],
    null_cursor: int = 0,
    warn_share: float = 0.0,
    quarantine: QuarantineSummary | None = None,
    before_start: int = 0,
) -> list[dg.AssetCheckResult]:
    """The in-run check results of one landing (`new_columns`: added to an existing table)."""
    extra = quarantine_metadata(quarantine) if quarantine is not None else {}
    return [
        reconcile_result(asset_key, read, quarantined, landed),
        drift_result(asset_key, new_columns),
        unplaced_result(asset_key, read, null_cursor, quarantined, warn_share, extra, before_start),
    ]


def quarantine_metadata(summary: QuarantineSummary) -> dict[str, dg.MetadataValue]:
    """The quarantine's top reasons, a few rejected rows and the query that lists them all."""
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    sample = "\n".join(
        ["| where | reason | raw value |", "|---|---|---|"]
        + [f"| {cell(w)} | {cell(r)} | `{cell(v)}` |" for w, r, v in summary.sample]
    )
    return {
        "quarantine_top_reasons": dg.MetadataValue.json(dict(summary.reasons)),
        "quarantine_sample": dg.MetadataValue.md(sample),
        "quarantine_query": dg.MetadataValue.text(summary.query),
    }


def reconcile_result(
    asset_key: dg.AssetKey, read: int, quarantined: int, landed: int
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ROWS_RECONCILE,
        asset_key=asset_key,
        passed=landed == read - quarantined,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_read": read, "rows_quarantined": quarantined, "rows_landed": landed},
        description=None
        if landed == read - quarantined
        else f"read {read}, quarantined {quarantined}, but the warehouse holds {landed}",
    )


def drift_result(
    asset_key: dg.AssetKey, new_columns: Sequence[str], retyped: Sequence[str] = ()
) -> dg.AssetCheckResult:
    drifted = bool(new_columns or retyped)
    return dg.AssetCheckResult(
        check_name=SCHEMA_DRIFT,
        asset_key=asset_key,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_columns": dg.MetadataValue.json(list(new_columns)),
            "retyped_columns": dg.MetadataValue.json(list(retyped)),
        },
    )


def unplaced_result(
    asset_key: dg.AssetKey, read: int, null_cursor: int = 0, quarantined: int = 0,
    warn_share: float = 0.0, extra: dict[str, dg.MetadataValue] | None = None,
    before_start: int = 0,
) -> dg.AssetCheckResult:  # fmt: skip
    share = quarantined / read if read else 0.0
    return dg.AssetCheckResult(
        check_name=UNPLACED_ROWS,
        asset_key=asset_key,
        passed=null_cursor == 0 and before_start == 0 and share <= warn_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows_null_cursor": null_cursor,
            "rows_before_start": before_start,
            "rows_quarantined": quarantined,
            "quarantine_share": dg.MetadataValue.float(round(share, 6)),
            **(extra or {}),
        },
    )


def freshness_policy(
    batch: BatchSpec, health: HealthSpec, sensor_interval_seconds: int = 0
) -> dg.FreshnessPolicy | None:
    """Warn once the newest landing is a batch period and a grace old; fail a period later.

    Dagster evaluates it without a sensor (`freshness: enabled` in dagster.yaml) and shows
    it on the asset in the UI.
    """
    warn = freshness_window(batch, health, sensor_interval_seconds)
    if not health.freshness or warn is None:
        return None
    period = warn - grace(batch, health, sensor_interval_seconds)
    return dg.FreshnessPolicy.time_window(fail_window=warn + period, warn_window=warn)


def freshness_window(
    batch: BatchSpec, health: HealthSpec, sensor_interval_seconds: int = 0
) -> timedelta | None:
    """How old the newest landing may be: one batch period (or max_wait) plus the grace.

    A size batch without `max_wait` lands only when data arrives, so silence is not late.
    """
    period = _period(batch, sensor_interval_seconds)
    if period is None:
        return None
    # Landings follow each boundary, so the newest is at most a period old until one is
    # missed; a grace later it is flagged.
    return period + grace(batch, health, sensor_interval_seconds)


def _period(batch: BatchSpec, sensor_interval_seconds: int) -> timedelta | None:
    if batch.is_time:
        return batch_period(batch)
    if batch.max_wait_seconds is not None:
        return timedelta(seconds=batch.max_wait_seconds + sensor_interval_seconds)
    return None


def grace(batch: BatchSpec, health: HealthSpec, sensor_interval_seconds: int) -> timedelta:
    """How late past a batch boundary data may be before it is flagged."""
    if health.freshness_grace:
        return timedelta(seconds=parse_duration(health.freshness_grace))
    period = _period(batch, sensor_interval_seconds) or timedelta(0)
    return max(period / 4, timedelta(minutes=5))


def batch_period(batch: BatchSpec) -> timedelta:
    """The longest gap between two consecutive batch boundaries (over the next few)."""
    partitions_def = batch.partitions_def("period")
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return _longest_gap(partitions_def.cron_schedule, batch.timezone)


@functools.cache
def _longest_gap(cron: str, timezone: str) -> timedelta:
    # Called for every asset while definitions load; sources share a handful of crons.
    ticks = cron_string_iterator(datetime(2026, 1, 1).timestamp(), cron, timezone)
    moments = [next(ticks) for _ in range(8)]
    return max(later - earlier for earlier, later in zip(moments, moments[1:], strict=False))


def stream_checks(
    asset_key: dg.AssetKey,
    warehouse: Warehouse,
    dataset: str,
    table: str,
    key: str,
    report: StreamLandingReport,
    table_existed: bool,
    warn_share: float,
) -> list[dg.AssetCheckResult]:
    """The in-run checks of one stream or queue slice: every record read is a row or in the
    quarantine, counted in the warehouse after the commit."""
    return landing_checks(
        asset_key,
        read=report.rows_landed + report.rows_quarantined,
        quarantined=report.rows_quarantined,
        landed=warehouse.count_batches(dataset, table, [key]),
        new_columns=report.new_columns if table_existed else [],
        warn_share=warn_share,
        quarantine=summarize_quarantine(warehouse, dataset, [key])
        if report.rows_quarantined
        else None,
    )
