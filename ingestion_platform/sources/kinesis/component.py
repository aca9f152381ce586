"""A Kinesis data stream landed in DuckDB as exact, replayable partitions.

Dagster does not stream, so the stream is cut into partitions. With a size batch
(`records: N` or `bytes: 64MB`, plus `max_wait`) a sensor cuts a partition whenever that
much is pending across all shards, and stores its per-shard sequence ranges in the
warehouse (`<source>._partitions`, kinesis_manifest.py). With a time batch (`every:` or
`cron:`) each window of arrival time is a partition, landed once it has closed. Either way
one asset, `<source>/<table>`, lands a partition's exact records in one DuckDB transaction,
unique on (shard id, sequence number): a re-run or a killed run never duplicates or loses one.

The asset joins no `duckdb_warehouse` pool: a run spends its time reading the stream, and a
slow or hung peer holding the pool's one slot would stop every other source from landing.
The warehouse's lock still serialises the landing transaction itself.
"""

import time
from datetime import UTC
from typing import Literal

import dagster as dg

from ingestion_platform.core.batching import CheckedBatch, scheduled_definitions
from ingestion_platform.core.bounded import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health, stream_checks
from ingestion_platform.core.lag import lag_defs
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.sources.kinesis.connectors.kinesis import (
    DEFAULT_READ_TIMEOUT_SECONDS,
    Backoff,
    KinesisReader,
    StreamAddress,
    make_client,
)
from ingestion_platform.sources.kinesis.lag import kinesis_lag_measure
from ingestion_platform.sources.kinesis.run import (
    LandingTarget,
    land_size_partition,
    land_time_window,
    landing_metadata,
    wait_for_window,
)
from ingestion_platform.sources.kinesis.sensor import StartAt, build_stream_sensor

# Kinesis accepts records of up to 1 MiB.
DEFAULT_MAX_RECORD_BYTES = 1_048_576


class KinesisStreamSource(dg.Component, dg.Model, dg.Resolvable):
    """A Kinesis data stream, cut into size or time partitions landed exactly once."""

    stream: str
    region: Setting | None = None
    endpoint_url: Setting | None = None
    start_at: str = "TRIM_HORIZON"
    decoding: Literal["json", "jsonl", "raw"] = "json"
    kpl: bool = False
    table: str | None = None
    columns: dict[str, str] | None = None
    max_record_bytes: PositiveInt = DEFAULT_MAX_RECORD_BYTES
    batch: CheckedBatch
    grace_seconds: NonNegativeInt = 10
    read_threads: PositiveInt = 8
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    # A call Kinesis leaves unanswered this long fails the run (or tick), naming the call.
    read_timeout_seconds: PositiveFloat = DEFAULT_READ_TIMEOUT_SECONDS
    # A sensor tick stops reading after this long (the daemon gives it 60 s in all).
    tick_budget_seconds: PositiveFloat = 30
    # How often a run logs the records it has read so far.
    progress_interval_seconds: NonNegativeFloat = 5
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        table = self.table or StreamAddress(self.stream).name.replace("-", "_")
        partitions = self.batch.partitions_def(f"{source.name}__{table}")
        asset = self._asset(source, table, partitions)
        running = self.automation == "running"
        lag = lag_defs(
            source=source.name,
            measures={
                asset.key: kinesis_lag_measure(
                    source=source,
                    # Few retries: the lag sensor measures every source in turn.
                    open_reader=lambda: self._reader(source, Backoff(attempts=3)),
                    partitions_def=partitions,
                    asset_key=asset.key,
                    start_at=StartAt(self.start_at),
                    unit="bytes" if self._by_bytes else "records",
                    cap=1 if self.batch.is_time else self.batch.size_threshold,
                )
            },
            batch=self.batch,
            health=self.health,
            sensor_interval_seconds=self.sensor_interval_seconds,
        )
        if self.batch.is_time:
            return dg.Definitions.merge(scheduled_definitions(source.name, [asset], running), lag)
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)

        def open_stream() -> tuple[KinesisReader, StartAt]:
            return self._reader(source), StartAt(self.start_at)

        sensor = build_stream_sensor(
            name=f"{source.name}__size_sensor",
            dataset=source.name,
            spec=self.batch,
            asset_key=asset.key,
            partitions_def=partitions,
            open_stream=open_stream,
            source=source,
            minimum_interval_seconds=self.sensor_interval_seconds,
            running=running,
            tick_budget_seconds=self.tick_budget_seconds,
        )
        return dg.Definitions.merge(dg.Definitions(assets=[asset], sensors=[sensor]), lag)

    @property
    def _by_bytes(self) -> bool:
        return not self.batch.is_time and self.batch.size_unit == "bytes"

    def _check(self, source: SourceContext) -> None:
        if not self.batch.is_time and self.batch.size_unit == "files":
            raise source.error(
                "batch", "a stream has no files", "use `records: N`, `bytes: 64MB` or a time batch"
            )
        if self.start_at.upper() not in ("TRIM_HORIZON", "LATEST"):
            try:
                StartAt(self.start_at).timestamp()
            except ValueError:
                raise source.error(
                    "start_at",
                    f"cannot read {self.start_at!r} as a position",
                    "write TRIM_HORIZON, LATEST or a time such as 2026-01-01T00:00:00Z",
                ) from None
        if self.kpl and self.decoding == "raw":
            raise source.error(
                "kpl", "de-aggregated raw bytes have no columns to tell records apart", "use json"
            )

    def _where(self) -> str:
        """The endpoint, without secrets (credentials never appear in a declaration)."""
        if self.endpoint_url is None:
            return ""
        endpoint = self.endpoint_url
        return f" at {endpoint}" if isinstance(endpoint, str) else f" at ${endpoint.env}"

    def _reader(self, source: SourceContext, backoff: Backoff | None = None) -> KinesisReader:
        region = source.resolve(self.region, "region") if self.region else None
        endpoint = source.resolve(self.endpoint_url, "endpoint_url") if self.endpoint_url else None
        address = StreamAddress(self.stream, region, endpoint)
        client = make_client(address, self.read_timeout_seconds)
        return KinesisReader(client, address, backoff, read_timeout=self.read_timeout_seconds)

    def _asset(
        self, source: SourceContext, table: str, partitions_def: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        boundary = (
            "arrival-time window"
            if self.batch.is_time
            else f"{self.batch.size_threshold:,} {self.batch.size_unit.replace('rows', 'records')}"
        )

        @dg.asset(
            key=[source.name, table],
            group_name=source.name,
            kinds={"kinesis", "duckdb"},
            description=f"Records of the Kinesis stream {self.stream}{self._where()} (stream "
            f"source), one partition per {boundary}; bad records go to {source.name}._quarantine.",
            partitions_def=partitions_def,
            metadata={"source_file": source.defs_file},
            **asset_health(  # type: ignore[arg-type]
                dg.AssetKey([source.name, table]),
                self.batch,
                self.health,
                self.sensor_interval_seconds,
                quarantines=True,
            ),
        )
        def _land_stream(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands one partition's exact records of the stream. (Not a docstring: the
            # description is set above, and Dagster would parse a docstring for every asset.)
            with source.naming_failures(ConnectionError):
                return self._materialize(context, warehouse, source, table)

        return _land_stream

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceContext,
        table: str,
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        reader = self._reader(source)
        target = LandingTarget(
            warehouse=warehouse.get(),
            dataset=source.name,
            table=table,
            decoding=self.decoding,
            kpl=self.kpl,
            max_record_bytes=self.max_record_bytes,
            column_types=dict(self.columns or {}),
            threads=self.read_threads,
            log=context.log.info,
            progress_interval_seconds=self.progress_interval_seconds,
        )
        key = context.partition_key
        # A table's first landing creates its columns; only later additions are drift.
        existed = target.warehouse.table_exists(source.name, table)
        extra: dict[str, dg.RawMetadataValue]
        if self.batch.is_time:
            window = context.partition_time_window
            start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
            wait_for_window(end, self.grace_seconds, context.log.info)
            report, spans, stats = land_time_window(reader, target, key, start, end)
            extra = {
                "shard_ranges": dg.MetadataValue.json(
                    {
                        shard: {"first": a, "last": b, "records": n}
                        for shard, (a, b, n) in spans.items()
                    }
                ),
                "slice_start": dg.MetadataValue.timestamp(start),
                "slice_end": dg.MetadataValue.timestamp(end),
            }
        else:
            report, ranges, stats = land_size_partition(reader, target, key)
            extra = {
                "shard_ranges": dg.MetadataValue.json(
                    {
                        r.shard_id: {
                            "first": r.first_sequence,
                            "last": r.last_sequence,
                            "records": r.records,
                            "shard_ended": r.shard_ended,
                        }
                        for r in ranges
                    }
                ),
                "shards": len(ranges),
                "lag_at_cut_ms": max(r.lag_ms for r in ranges),
            }
        extra.update(stats)
        # The whole run: reading the shards, decoding and the landing transaction.
        report.duration_seconds = time.monotonic() - started
        context.log.info(
            f"{source.name}.{table}: read {report.records_read} records, landed "
            f"{report.rows_landed} rows, quarantined {report.rows_quarantined}, in "
            f"{report.duration_seconds:.2f}s"
        )
        checks = stream_checks(
            context.asset_key,
            target.warehouse,
            source.name,
            table,
            key,
            report,
            existed,
            self.health.quarantine_warn_share,
        )
        return dg.MaterializeResult(
            metadata=landing_metadata(report, table, extra), check_results=checks
        )
