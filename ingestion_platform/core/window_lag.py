"""Lag of a time-batched source: closed windows that no landed partition holds.

A time batch has no cutting code of its own, its schedule is the cutter: a window that
closed and did not land (the schedule off, its runs failing) is data waiting at the
source. Windows before the table's first landing are history, a backfill decision, not
lag; a table that never landed counts the windows of the last few periods, which its
schedule should have run.
"""

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.core.health import HealthSpec
from ingestion_platform.core.lag import LagMeasure, SourceLag, lag_defs

# A minutely batch over a year is half a million windows; the lag only needs the recent.
MAX_WINDOWS = 2000
NEVER_LANDED_WINDOWS = 3


def closed_windows_lag(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    now: datetime,
) -> SourceLag:
    """Closed windows of `asset_key` that did not land, the oldest counted from its start."""
    landed = instance.get_materialized_partitions(asset_key)
    first_landed = min(
        (partitions_def.time_window_for_partition_key(key).start for key in landed),
        default=None,
    )
    waiting: list[tuple[str, dg.TimeWindow]] = []
    window = partitions_def.get_prev_partition_window(now)
    for seen in range(MAX_WINDOWS):
        if window is None or (first_landed is not None and window.start < first_landed):
            break
        if first_landed is None and seen >= NEVER_LANDED_WINDOWS:
            break
        key = partitions_def.get_partition_key_for_timestamp(window.start.timestamp())
        if key not in landed:
            waiting.append((key, window))
        window = partitions_def.get_prev_partition_window(window.start)
    return SourceLag(
        waiting=len(waiting),
        unit="windows",
        oldest_waiting_at=waiting[-1][1].start if waiting else None,
        detail={"oldest_window": waiting[-1][0]} if waiting else {},
    )


def time_batch_lag_defs(
    source: str, assets: Sequence[dg.AssetsDefinition], batch: BatchSpec, health: HealthSpec
) -> dg.Definitions:
    """The source_lag check and sensor of a time-batched source: its closed, unlanded windows."""
    measures: dict[dg.AssetKey, LagMeasure] = {}
    for asset in assets:
        windows = asset.partitions_def
        assert isinstance(windows, dg.TimeWindowPartitionsDefinition)
        for key in asset.keys:
            measures[key] = functools.partial(_measure_windows, asset_key=key, windows=windows)
    return lag_defs(
        source=source, measures=measures, batch=batch, health=health, sensor_interval_seconds=0
    )


def _measure_windows(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, windows: dg.TimeWindowPartitionsDefinition
) -> SourceLag:
    return closed_windows_lag(instance, asset_key, windows, datetime.now(UTC))
