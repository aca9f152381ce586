"""Lag of a Kinesis source: records in the stream that no partition holds yet.

- A size batch: per shard, the records past the end of the newest range of any partition
  Dagster knows (a cut that never became a partition does not count), read at the stream
  itself up to one batch per shard, including closed shards and children never read.
  Ranges cut before the stream's creation time belong to an earlier stream of that name.
  The oldest waiting record's ApproximateArrivalTimestamp dates the wait.
- A time batch: closed windows that did not land (core/window_lag.py).
It shares the reader with the sensor but none of the cutting code (readable_shards,
plan_cuts), so a shard the cutting never finishes shows up here as records waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.lag import LagMeasure, SourceLag
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.core.window_lag import closed_windows_lag
from ingestion_platform.sources.kinesis import manifest
from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisReader
from ingestion_platform.sources.kinesis.connectors.lag import MEASURE_SECONDS, waiting_records
from ingestion_platform.sources.kinesis.sensor import StartAt


def kinesis_lag(
    instance: dg.DagsterInstance,
    *,
    reader: KinesisReader,
    warehouse: Warehouse,
    dataset: str,
    partitions_name: str,
    start_at: StartAt,
    unit: str,
    cap: int,
    seconds: float = MEASURE_SECONDS,
) -> SourceLag:
    """Records (or bytes) waiting past the newest cut of each shard, and the oldest's arrival."""
    keys = instance.get_dynamic_partitions(partitions_name)
    created = reader.created_at()
    shards = reader.shards()
    with manifest.sensor_connection(warehouse) as connection:
        ends = manifest.cut_ends(connection, dataset, keys, created)
        since = start_at.timestamp()
        if start_at.latest:
            # Before the first tick nothing is watched yet, so nothing waits.
            origin = manifest.origin(connection, dataset)
            since = max(origin, created) if origin is not None else datetime.now(UTC)
    by_bytes = unit == "bytes"
    waits = waiting_records(
        reader,
        shards,
        ends,
        since,
        cap_records=None if by_bytes else cap,
        cap_bytes=cap if by_bytes else None,
        seconds=seconds,
    )
    waiting = [w for w in waits if w.records]
    oldest = min((w.oldest_ms for w in waiting if w.oldest_ms is not None), default=None)
    detail: dict[str, int | float | str] = {w.shard_id: w.records for w in waiting}
    capped = [w for w in waiting if w.capped]
    if capped:
        # At least that many wait there; how far behind the tip the read stopped.
        detail["capped_shards"] = len(capped)
        detail["max_millis_behind"] = max(w.millis_behind for w in capped)
    return SourceLag(
        waiting=sum(w.records for w in waiting),
        unit="records",
        oldest_waiting_at=None if oldest is None else datetime.fromtimestamp(oldest / 1000, UTC),
        detail=detail,
        waiting_bytes=sum(w.bytes for w in waiting),
    )


def kinesis_lag_measure(
    *,
    source: SourceContext,
    open_reader: Callable[[], KinesisReader],
    partitions_def: dg.PartitionsDefinition,
    asset_key: dg.AssetKey,
    start_at: StartAt,
    unit: str,
    cap: int,
    warehouse: Callable[[], Warehouse] = lambda: WarehouseResource().get(),
) -> LagMeasure:
    """The lag measure of a stream's table (a closure over its settings)."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        windows = partitions_def
        return lambda instance: closed_windows_lag(instance, asset_key, windows, datetime.now(UTC))
    assert isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name
    name = partitions_def.name

    def measure(instance: dg.DagsterInstance) -> SourceLag:
        try:
            return kinesis_lag(
                instance,
                reader=open_reader(),
                warehouse=warehouse(),
                dataset=source.name,
                partitions_name=name,
                start_at=start_at,
                unit=unit,
                cap=cap,
            )
        except (ConnectionError, manifest.WarehouseBusy) as error:
            raise SourceFailure(
                f"source {source.name!r} ({source.defs_file}): lag not measured: {error}"
            ) from None

    return measure
