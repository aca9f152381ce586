"""A RabbitMQ queue or stream landed in DuckDB exactly once, in exact, replayable ranges.

RabbitMQ holds two kinds of thing, and the declaration names one:

- `stream:` a replayable log. A partition is a range of stream positions `(lo, hi]`
  (offsets `lo .. hi - 1`), cut by the shared size sensor once `records: N` wait past the
  newest cut (or `max_wait` has passed), and read again exactly by offset
  (connectors/amqp_stream.py). Exactly once on (stream, offset); a range retention has
  dropped fails saying so and the landed slice stays.
- `queue:` a classic or quorum queue, which forgets what is acknowledged. Each sensor tick
  drains it land-then-ack into `<source>._buffer` (core/message_buffer.py): a window of
  `prefetch` messages is committed, then acknowledged. A redelivery after a crash between
  the two is recognised by the AMQP `message_id`. Partitions are then exact ranges of the
  buffer, landed like a stream's.

The landed table keeps each message's origin in the stream pipeline's columns: the stream
(or `_buffer`) in `_shard_id`, the offset (or buffer sequence) in `_sequence_number`, the
routing key in `_partition_key`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg

from ingestion_platform.core import message_buffer
from ingestion_platform.core.batching import CheckedBatch, CursorSlice, latest_slice_end
from ingestion_platform.core.bounded import Port, PositiveFloat, PositiveInt
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health, stream_checks
from ingestion_platform.core.lag import SourceLag, lag_defs
from ingestion_platform.core.pending import Pending
from ingestion_platform.core.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource

# RabbitMQ's default max_message_size is 128 MiB; rows that large are a mistake.
DEFAULT_MAX_RECORD_BYTES = 1_048_576


class RabbitMqSource(dg.Component, dg.Model, dg.Resolvable):
    """A RabbitMQ stream (replayable) or queue (land-then-ack), landed exactly once."""

    queue: str | None = None
    stream: str | None = None
    host: Setting = "127.0.0.1"
    port: Port = 5672
    stream_port: Port = 5552
    # Streams through a load balancer or proxy: connect to host:stream_port, not to the
    # address the node advertises (which may not be reachable from here).
    stream_load_balancer: bool = False
    vhost: str = "/"
    username: Setting = "guest"
    password: Setting = "guest"
    tls: bool = False
    # Messages a queue consumer holds unacknowledged: one buffer commit per window.
    prefetch: PositiveInt = 5000
    table: str | None = None
    decoding: Literal["json", "jsonl", "raw"] = "json"
    columns: dict[str, str] | None = None
    max_record_bytes: PositiveInt = DEFAULT_MAX_RECORD_BYTES
    batch: CheckedBatch
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    # How long one tick may drain a queue before it cuts.
    drain_seconds: PositiveFloat = 10
    timeout_seconds: PositiveFloat = 10
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        name = self.stream or self.queue or ""
        table = self.table or name.lower().replace("-", "_").replace(".", "_")
        partitions = self.batch.partitions_def(f"{source.name}__{table}")
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        asset = self._asset(source, table, partitions)

        @contextmanager
        def open_measure() -> Iterator[Measure]:
            with source.naming_failures(ConnectionError):
                if self.stream:
                    yield self._stream_measure(source)
                else:
                    warehouse = WarehouseResource().get()
                    self.drain(source, warehouse)
                    yield lambda _s, after, n: self._buffer_pending(warehouse, source, after, n)

        every = f"ranges of {self.batch.size_threshold:,} messages."
        sensor = build_size_sensor(
            name=f"{source.name}__size_sensor",
            spec=self.batch,
            streams=[SizeStream(table, [asset.key], partitions)],
            open_measure=open_measure,
            minimum_interval_seconds=self.sensor_interval_seconds,
            description=f"Cuts the RabbitMQ stream {self.stream} into {every}"
            if self.stream
            else f"Drains the RabbitMQ queue {self.queue} into {source.name}._buffer "
            f"(acknowledged after the commit) and cuts {every}",
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
        if (self.queue is None) == (self.stream is None):
            raise source.error(
                "queue",
                "a RabbitMQ source reads one queue or one stream",
                "set exactly one of `queue:` and `stream:`",
            )
        if self.batch.is_time or self.batch.size_unit != "rows":
            raise source.error(
                "batch",
                "a RabbitMQ source is cut by message count",
                "use `records: N` (and `max_wait:`)",
            )

    def amqp_settings(self, source: SourceContext) -> Any:
        """The broker and credentials for a queue, read from the environment when needed."""
        from ingestion_platform.sources.rabbitmq.connectors.amqp_queue import AmqpSettings

        return AmqpSettings(
            host=source.resolve(self.host, "host"),
            port=self.port,
            vhost=self.vhost,
            username=source.resolve(self.username, "username"),
            password=source.resolve(self.password, "password"),
            tls=self.tls,
            timeout_seconds=self.timeout_seconds,
        )

    def stream_settings(self, source: SourceContext) -> Any:
        """The broker, stream and credentials for a stream, read when needed."""
        from ingestion_platform.sources.rabbitmq.connectors.amqp_stream import StreamSettings

        assert self.stream is not None
        return StreamSettings(
            host=source.resolve(self.host, "host"),
            port=self.stream_port,
            vhost=self.vhost,
            username=source.resolve(self.username, "username"),
            password=source.resolve(self.password, "password"),
            stream=self.stream,
            tls=self.tls,
            timeout_seconds=self.timeout_seconds,
            load_balancer=self.stream_load_balancer,
        )

    def drain(self, source: SourceContext, warehouse: Warehouse) -> int:
        """Commit what the queue holds (up to drain_seconds) to the buffer, then ack it."""
        from ingestion_platform.sources.rabbitmq.connectors.amqp_queue import drain

        assert self.queue is not None

        def commit(messages: list[Any]) -> None:
            message_buffer.append(
                warehouse,
                source.name,
                [
                    message_buffer.BufferedMessage(m.message_id, m.routing_key, m.body,
                                                   m.arrived_ms)
                    for m in messages
                ],
            )  # fmt: skip

        return drain(
            self.amqp_settings(source),
            self.queue,
            commit,
            prefetch=self.prefetch,
            max_seconds=self.drain_seconds,
        )

    def _stream_measure(self, source: SourceContext) -> Measure:
        from ingestion_platform.sources.rabbitmq.connectors.amqp_stream import Span, span

        settings = self.stream_settings(source)
        ends: list[Span] = []

        def measure(_stream: str, after: Any, threshold: int) -> Pending:
            if not ends:  # once a tick; where the stream starts only before the first cut
                ends.append(span(settings, 0 if after is None else None))
            newest, first = ends[0].newest, ends[0].first
            start = int(after or 0)
            if after is None:
                # The first cut starts where the stream starts now: retention may have
                # dropped its beginning before the platform first read it.
                start = first.offset if first else newest
            # Offsets are dense but for the stream's own bookkeeping entries, so a range of
            # `threshold` positions holds at most `threshold` messages.
            waiting = max(0, newest - start)
            full = start + threshold if waiting >= threshold else None
            return Pending(min(waiting, threshold), full, newest if waiting else None)

        return measure

    def _buffer_pending(
        self, warehouse: Warehouse, source: SourceContext, after: Any, threshold: int
    ) -> Pending:
        count, full, newest, _ = message_buffer.waiting_after(
            warehouse, source.name, int(after or 0), threshold
        )
        return Pending(count, full, newest)

    def _lag(
        self,
        source: SourceContext,
        instance: dg.DagsterInstance,
        partitions: dg.DynamicPartitionsDefinition,
    ) -> SourceLag:
        assert partitions.name is not None
        after = int(latest_slice_end(instance.get_dynamic_partitions(partitions.name)) or 0)
        # Imported here: the code server loads definitions without the brokers' clients.
        from ingestion_platform.sources.rabbitmq.lag import queue_lag, stream_lag

        with source.naming_failures(ConnectionError):
            if self.stream:
                return stream_lag(self.stream_settings(source), after)
            assert self.queue is not None
            warehouse = WarehouseResource().get()
            return queue_lag(self.amqp_settings(source), self.queue, warehouse, source.name, after)

    def _asset(
        self, source: SourceContext, table: str, partitions_def: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        what = f"stream {self.stream}" if self.stream else f"queue {self.queue}"
        unit = "messages" if self.stream else "buffered messages"

        @dg.asset(
            key=[source.name, table],
            group_name=source.name,
            kinds={"rabbitmq", "duckdb"},
            description=f"Messages of the RabbitMQ {what}, one partition per range of "
            f"{self.batch.size_threshold:,} {unit}; bad messages go to "
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
        def _land_rabbitmq(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands one partition's exact range. (Not a docstring: the description is set
            # above, and Dagster would parse a docstring for every asset.)
            with source.naming_failures(ConnectionError):
                return self._materialize(context, warehouse.get(), source, table)

        return _land_rabbitmq

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        target: Warehouse,
        source: SourceContext,
        table: str,
    ) -> dg.MaterializeResult:
        # Imported here: reading and landing need pyarrow and dlt's naming, which the code
        # server never does.
        from ingestion_platform.core.message_landing import MessageDecoding
        from ingestion_platform.sources.rabbitmq.run import land_stream_range

        cut = CursorSlice.from_key(context.partition_key)
        lo, hi = int(cut.lo or 0), int(cut.hi)
        existed = target.table_exists(source.name, table)
        if self.stream:
            decoding = MessageDecoding(
                self.decoding, self.max_record_bytes, dict(self.columns or {})
            )
            report, metadata = land_stream_range(
                self.stream_settings(source), decoding, source, target, table,
                context.partition_key, lo, hi,
            )  # fmt: skip
            where = f"offsets {lo}..{hi - 1}"
        else:
            from ingestion_platform.sources.mqtt.run import land_buffer_range

            report, metadata = land_buffer_range(
                target, source.name, table, context.partition_key, lo, hi, self.decoding,
                self.max_record_bytes, dict(self.columns or {}),
            )  # fmt: skip
            where = f"buffer {lo + 1}..{hi}"
        context.log.info(
            f"{source.name}.{table}: {where}: read {report.records_read} messages, landed "
            f"{report.rows_landed} rows, quarantined {report.rows_quarantined}"
        )
        checks = stream_checks(
            context.asset_key, target, source.name, table, context.partition_key, report,
            existed, self.health.quarantine_warn_share,
        )  # fmt: skip
        return dg.MaterializeResult(metadata=metadata, check_results=checks)
