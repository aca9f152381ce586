"""A NATS JetStream stream landed in DuckDB as exact, replayable sequence ranges.

A JetStream stream is a replayable log: every stored message has a stream sequence number
and can be read again while the stream's retention keeps it. So a partition is a range of
sequence numbers `(lo, hi]` (with the declared subject filter), named by its key
(`1000..2000`), cut by the same size sensor as database and API sources once `records: N`
wait past the newest cut (or `max_wait` has passed). Its run reads exactly that range
through an ephemeral consumer and lands it in one DuckDB transaction, keyed by
`_batch_key`, with bad messages in `<source>._quarantine`: a replay reads the same
messages and replaces the same rows, exactly once on (stream, sequence). If retention has
dropped part of the range since, the run fails saying so and the landed slice stays.

The landed table keeps each message's origin in the stream pipeline's columns: the stream
in `_shard_id`, the stream sequence in `_sequence_number` and the subject in
`_partition_key` (core/message_landing.py).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg

from ingestion_platform.core.batching import CheckedBatch, CursorSlice, latest_slice_end
from ingestion_platform.core.bounded import PositiveFloat, PositiveInt
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health, stream_checks
from ingestion_platform.core.lag import SourceLag, lag_defs
from ingestion_platform.core.pending import Pending
from ingestion_platform.core.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.sources.nats.connectors.jetstream import (
    JetStreamSettings,
    message_time_ms,
    waiting_after,
)

# JetStream's default max_payload is 1 MiB.
DEFAULT_MAX_RECORD_BYTES = 1_048_576


class NatsJetStreamSource(dg.Component, dg.Model, dg.Resolvable):
    """A NATS JetStream stream, cut into exact sequence ranges landed exactly once."""

    stream: str
    servers: Setting = "nats://127.0.0.1:4222"
    subject: str | None = None
    token: Setting | None = None
    user: Setting | None = None
    password: Setting | None = None
    table: str | None = None
    decoding: Literal["json", "jsonl", "raw"] = "json"
    columns: dict[str, str] | None = None
    max_record_bytes: PositiveInt = DEFAULT_MAX_RECORD_BYTES
    batch: CheckedBatch
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    timeout_seconds: PositiveFloat = 10
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        table = self.table or self.stream.lower().replace("-", "_")
        partitions = self.batch.partitions_def(f"{source.name}__{table}")
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        asset = self._asset(source, table, partitions)

        @contextmanager
        def open_measure() -> Iterator[Measure]:
            settings = self.settings(source)
            with source.naming_failures(ConnectionError):
                yield lambda _stream, after, threshold: self._pending(settings, after, threshold)

        sensor = build_size_sensor(
            name=f"{source.name}__size_sensor",
            spec=self.batch,
            streams=[SizeStream(table, [asset.key], partitions)],
            open_measure=open_measure,
            minimum_interval_seconds=self.sensor_interval_seconds,
            description=f"Cuts the JetStream stream {self.stream} into ranges of "
            f"{self.batch.size_threshold:,} messages.",
            running=self.automation == "running",
            unit="messages",
        )
        lag = lag_defs(
            source=source.name,
            measures={asset.key: lambda instance: self._lag(source, instance, partitions)},
            batch=self.batch,
            health=self.health,
            sensor_interval_seconds=self.sensor_interval_seconds,
        )
        return dg.Definitions.merge(dg.Definitions(assets=[asset], sensors=[sensor]), lag)

    def _check(self, source: SourceContext) -> None:
        if self.batch.is_time or self.batch.size_unit != "rows":
            raise source.error(
                "batch",
                "a JetStream source is cut by message count",
                "use `records: N` (and `max_wait:`)",
            )
        if (self.user is None) != (self.password is None):
            raise source.error("password", "user and password go together", "set both, or token")

    def settings(self, source: SourceContext) -> JetStreamSettings:
        """Where to connect and how to sign in, read from the environment when a run needs it."""
        return JetStreamSettings(
            servers=source.resolve(self.servers, "servers"),
            stream=self.stream,
            subject=self.subject,
            token=source.resolve(self.token, "token") if self.token else None,
            user=source.resolve(self.user, "user") if self.user else None,
            password=source.resolve(self.password, "password") if self.password else None,
            timeout_seconds=self.timeout_seconds,
        )

    def _pending(self, settings: JetStreamSettings, after: Any, threshold: int) -> Pending:
        start = int(after or 0)
        waiting = waiting_after(settings, start)
        if waiting.messages == 0:
            return Pending(0, None, None)
        full = None
        if waiting.messages >= threshold:
            # Without a filter every sequence is a message; with one, the range runs to the
            # newest message, so it holds at least `threshold` of them.
            full = start + threshold if self.subject is None else waiting.last_sequence
        return Pending(min(waiting.messages, threshold), full, waiting.last_sequence)

    def _lag(
        self,
        source: SourceContext,
        instance: dg.DagsterInstance,
        partitions: dg.DynamicPartitionsDefinition,
    ) -> SourceLag:
        assert partitions.name is not None
        after = int(latest_slice_end(instance.get_dynamic_partitions(partitions.name)) or 0)
        settings = self.settings(source)
        with source.naming_failures(ConnectionError):
            waiting = waiting_after(settings, after)
            oldest_ms = message_time_ms(settings, after + 1) if waiting.messages else None
        oldest = datetime.fromtimestamp(oldest_ms / 1000, UTC) if oldest_ms else None
        return SourceLag(
            waiting.messages,
            "messages",
            oldest,
            detail={"newest_sequence": waiting.last_sequence, "cut_through": after},
        )

    def _asset(
        self, source: SourceContext, table: str, partitions_def: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        where = f"{self.stream} ({self.subject})" if self.subject else self.stream

        @dg.asset(
            key=[source.name, table],
            group_name=source.name,
            kinds={"nats", "duckdb"},
            description=f"Messages of the JetStream stream {where}, one partition per range of "
            f"{self.batch.size_threshold:,} messages; bad messages go to "
            f"{source.name}._quarantine.",
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
        def _land_jetstream(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands one partition's exact range of the stream. (Not a docstring: the
            # description is set above, and Dagster would parse a docstring for every asset.)
            with source.naming_failures(ConnectionError):
                return self._materialize(context, warehouse, source, table)

        return _land_jetstream

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceContext,
        table: str,
    ) -> dg.MaterializeResult:
        # Imported here: the run's reading and landing need pyarrow and dlt's naming, which
        # the code server never does.
        from ingestion_platform.core.message_landing import MessageDecoding
        from ingestion_platform.sources.nats.run import land_range

        cut = CursorSlice.from_key(context.partition_key)
        lo, hi = int(cut.lo or 0), int(cut.hi)
        target = warehouse.get()
        existed = target.table_exists(source.name, table)
        decoding = MessageDecoding(self.decoding, self.max_record_bytes, dict(self.columns or {}))
        report, metadata = land_range(
            self.settings(source), decoding, source, target, table, context.partition_key, lo, hi
        )
        context.log.info(
            f"{source.name}.{table}: sequences {lo + 1}..{hi}: read {report.records_read} "
            f"messages, landed {report.rows_landed} rows, quarantined {report.rows_quarantined}"
        )

        checks = stream_checks(
            context.asset_key,
            target,
            source.name,
            table,
            context.partition_key,
            report,
            existed,
            self.health.quarantine_warn_share,
        )
        return dg.MaterializeResult(metadata=metadata, check_results=checks)
