"""One run of a stream partition: read its exact slice, shards in parallel, and land it.

A size partition reads each shard range of its manifest from its first to its last sequence
number; a time partition reads every shard from the window's start to its end by arrival
time. Before anything is deleted, the read is checked against the slice: records that have
passed the stream's retention fail the run with the date they were lost from, and the rows
landed earlier stay as they were.

Reading holds no warehouse lock (and the asset joins no pool): a slow or hung peer delays
only its own run. The warehouse is held for the landing transaction alone. The run logs
its progress every few seconds while it reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from ingestion_platform.core.message_landing import StreamLandingReport, land_stream_slice
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.kinesis import manifest
from ingestion_platform.sources.kinesis.connectors.decode import Decoding, decode
from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisReader, Shard, ShardRead
from ingestion_platform.sources.kinesis.manifest import ShardRange


class RetentionExceeded(RuntimeError):
    """The slice's records are older than the stream keeps them."""


class SliceMismatch(RuntimeError):
    """The stream no longer holds exactly the records the slice was cut from."""


@dataclass(frozen=True)
class LandingTarget:
    """Where and how a stream's slices land."""

    warehouse: Warehouse
    dataset: str
    table: str
    decoding: Decoding
    kpl: bool
    max_record_bytes: int
    column_types: dict[str, str]
    threads: int = 8
    log: Callable[[str], None] = field(default=lambda message: None)
    progress_interval_seconds: float = 5.0

    @property
    def label(self) -> str:
        return f"{self.dataset}.{self.table}"


class ReadProgress:
    """Counts records read per shard, across threads; logs them every `interval` seconds."""

    def __init__(self, target: LandingTarget, total: int | None) -> None:
        self.target = target
        self.total = total
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.logged = self.started
        self.lock = threading.Lock()

    def __call__(self, shard_id: str, records: int) -> None:
        with self.lock:
            self.counts[shard_id] = self.counts.get(shard_id, 0) + records
            now = time.monotonic()
            if now - self.logged < self.target.progress_interval_seconds:
                return
            self.logged = now
            read = sum(self.counts.values())
            of = f" of {self.total:,}" if self.total is not None else ""
            shards = ", ".join(f"{shard}: {n:,}" for shard, n in sorted(self.counts.items()))
            self.target.log(
                f"{self.target.label}: read {read:,}{of} records so far ({shards}) in "
                f"{now - self.started:.1f}s"
            )


def _retention_error(stream: str, hours: int, oldest: datetime, now: datetime) -> str:
    horizon = now - timedelta(hours=hours)
    return (
        f"records before {horizon:%Y-%m-%dT%H:%M:%S}Z are no longer in stream {stream!r} "
        f"(retention {hours} h), and this partition starts at {oldest:%Y-%m-%dT%H:%M:%S}Z; "
        "the landed rows of this partition were kept"
    )


def land_size_partition(
    reader: KinesisReader, target: LandingTarget, key: str
) -> tuple[StreamLandingReport, list[ShardRange], dict[str, int]]:
    """Land the manifest's ranges of `key`, or fail before touching the warehouse."""
    ranges = manifest.ranges(target.warehouse, target.dataset, key)
    if not ranges:
        raise SliceMismatch(
            f"partition {key!r} has no shard ranges in {target.dataset}.{manifest.MANIFEST_TABLE} "
            "of this warehouse; only partitions cut by this source's sensor into this "
            "warehouse can be landed"
        )
    now = datetime.now(UTC)
    hours = reader.retention_hours()
    oldest = min(r.first_arrival for r in ranges)
    if oldest < now - timedelta(hours=hours):
        raise RetentionExceeded(_retention_error(reader.address.name, hours, oldest, now))

    # A closed shard's range is read past the empty pages some peers give before its end.
    listed: dict[str, Shard] = {shard.shard_id: shard for shard in reader.shards()}
    progress = ReadProgress(target, sum(r.records for r in ranges))

    def read(shard_range: ShardRange) -> ShardRead:
        return reader.read(
            listed.get(shard_range.shard_id, shard_range.shard_id),
            at=shard_range.first_sequence,
            through=shard_range.last_sequence,
            on_page=progress,
        )

    reads = _parallel(read, ranges, target.threads)
    for shard_range, shard_read in zip(ranges, reads, strict=True):
        got = shard_read.records
        if not got or got[0].sequence != shard_range.first_sequence:
            raise RetentionExceeded(
                _retention_error(reader.address.name, hours, shard_range.first_arrival, now)
            )
        if len(got) != shard_range.records or got[-1].sequence != shard_range.last_sequence:
            raise SliceMismatch(
                f"{shard_range.shard_id}: read {len(got)} records ending at {got[-1].sequence}, "
                f"but the partition holds {shard_range.records} ending at "
                f"{shard_range.last_sequence}; the landed rows of this partition were kept"
            )
    report = _land(target, key, reads, mark=True)
    return report, ranges, _read_stats(reader, reads)


def land_time_window(
    reader: KinesisReader, target: LandingTarget, key: str, start: datetime, end: datetime
) -> tuple[StreamLandingReport, dict[str, tuple[str, str, int]], dict[str, int]]:
    """Land every record that arrived in [start, end), from every shard."""
    now = datetime.now(UTC)
    hours = reader.retention_hours()
    if start < now - timedelta(hours=hours):
        raise RetentionExceeded(_retention_error(reader.address.name, hours, start, now))
    progress = ReadProgress(target, None)

    def read(shard: Shard) -> ShardRead:
        return reader.read(shard, since=start, before=end, on_page=progress)

    reads = _parallel(read, reader.shards(), target.threads)
    for shard_read in reads:
        # AT_TIMESTAMP starts at the first record at or after `start`; keep the window exact.
        start_ms = int(start.timestamp() * 1000)
        shard_read.records = [r for r in shard_read.records if r.arrival_ms >= start_ms]
    ranges = {
        r.shard_id: (r.records[0].sequence, r.records[-1].sequence, len(r.records))
        for r in reads
        if r.records
    }
    report = _land(target, key, reads, mark=False)
    return report, ranges, _read_stats(reader, reads)


class WindowOpen(RuntimeError):
    """The time window has not ended yet, so its slice is not complete."""


def wait_for_window(end: datetime, grace_seconds: int, log: Callable[[str], None]) -> None:
    """Records put just before `end` may still be in flight; wait until end + grace."""
    now = datetime.now(UTC)
    due = end + timedelta(seconds=grace_seconds)
    if now < end:
        raise WindowOpen(
            f"this window ends at {end:%Y-%m-%dT%H:%M:%S}Z, so records may still arrive in it; "
            f"it can be landed from {due:%Y-%m-%dT%H:%M:%S}Z (the end plus grace_seconds)"
        )
    delay = (due - now).total_seconds()
    if delay > 0:
        log(f"window ends at {end:%H:%M:%S}Z; waiting {delay:.1f}s for in-flight puts")
        time.sleep(delay)


def _land(
    target: LandingTarget, key: str, reads: list[ShardRead], mark: bool
) -> StreamLandingReport:
    decoded = decode(
        (record for shard_read in reads for record in shard_read.records),
        decoding=target.decoding,
        kpl=target.kpl,
        max_record_bytes=target.max_record_bytes,
    )
    for shard_read in reads:
        # The decoded Arrow table holds every payload now; free the raw records.
        shard_read.records = []
    target.log(
        f"{target.label}: landing {decoded.records_read:,} records ({decoded.bytes_read:,} bytes)"
    )
    return land_stream_slice(
        warehouse=target.warehouse,
        dataset=target.dataset,
        table=target.table,
        batch_key=key,
        decoded=decoded,
        decoding=target.decoding,
        column_types=target.column_types,
        in_transaction=(lambda c: manifest.mark_landed(c, target.dataset, key)) if mark else None,
    )


def _parallel(function: Callable, items: list, threads: int) -> list:
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items) or 1))) as pool:
        return list(pool.map(function, items))


def _read_stats(reader: KinesisReader, reads: list[ShardRead]) -> dict[str, int]:
    return {
        "get_records_calls": sum(r.calls for r in reads),
        "throttled_retries": reader.throttled,
        "iterators_renewed": sum(r.iterators_renewed for r in reads),
    }


def landing_metadata(
    report: StreamLandingReport, table: str, extra: dict[str, dg.RawMetadataValue]
) -> dict[str, dg.RawMetadataValue]:
    """Counts that reconcile, bytes, timing and the table's columns, for the UI."""
    age_ms = None
    if report.oldest_arrival is not None:
        oldest = report.oldest_arrival
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age_ms = int((datetime.now(UTC) - oldest).total_seconds() * 1000)
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": report.rows_landed,
        "records_read": report.records_read,
        "rows_landed": report.rows_landed,
        "rows_quarantined": report.rows_quarantined,
        "bytes_read": report.bytes_read,
        "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
        "records_per_second": dg.MetadataValue.float(
            round(report.records_read / report.duration_seconds, 1)
            if report.duration_seconds
            else 0.0
        ),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind) for name, kind in report.columns.items()]
        ),
        "new_columns": dg.MetadataValue.json(report.new_columns),
        "table": table,
    }
    if age_ms is not None:
        metadata["oldest_record_age_ms"] = age_ms
    metadata.update(extra)
    return metadata
