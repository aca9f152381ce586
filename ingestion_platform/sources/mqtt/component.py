"""MQTT topics landed in DuckDB land-then-ack, then cut into exact ranges of a buffer.

An MQTT broker forgets a message once it is acknowledged, so the platform keeps its own
copy first. Each tick of `<source>__size_sensor` drains what the broker holds for the
source's persistent session (QoS 1, `clean_session=False`, a fixed client id) into
`<source>._buffer` in the warehouse, acknowledging each batch only after it committed
(sources/mqtt/connectors/mqtt.py), and then cuts partitions of the buffer's sequence,
`(lo, hi]`, by the same `batch:` rules as every size-batched source. A partition's run
lands its range from the buffer in one transaction, so it is an exact, replayable slice.
Messages published while the platform is down wait at the broker (up to its
`max_queued_messages`); a message delivered again after a crash between commit and ack
lands once, recognised by its message id (connectors/mqtt.message_id states the rule).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from ingestion_platform.sources.mqtt.connectors.mqtt import TlsFiles

DEFAULT_MAX_RECORD_BYTES = 1_048_576


class MqttTls(dg.Model):
    """TLS with a private CA and/or a client certificate (AWS IoT Core asks for one)."""

    ca_file: Setting | None = None  # PEM CA bundle that signed the broker's certificate
    cert_file: Setting | None = None  # PEM client certificate
    key_file: Setting | None = None  # its PEM private key


class MqttSource(dg.Component, dg.Model, dg.Resolvable):
    """MQTT topics (wildcards allowed), drained land-then-ack and landed exactly once."""

    topics: list[str]
    host: Setting = "127.0.0.1"
    port: Port = 1883
    client_id: str | None = None
    username: Setting | None = None
    password: Setting | None = None
    # true: the system's CAs; or a mapping with ca_file, cert_file and key_file.
    tls: bool | MqttTls = False
    table: str = "messages"
    decoding: Literal["json", "jsonl", "raw"] = "json"
    columns: dict[str, str] | None = None
    max_record_bytes: PositiveInt = DEFAULT_MAX_RECORD_BYTES
    batch: CheckedBatch
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    # How long one tick may drain the broker before it cuts.
    drain_seconds: PositiveFloat = 10
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        if self.batch.is_time or self.batch.size_unit != "rows":
            raise source.error(
                "batch", "MQTT messages are cut by count", "use `records: N` (and `max_wait:`)"
            )
        partitions = self.batch.partitions_def(f"{source.name}__{self.table}")
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        asset = self._asset(source, partitions)

        @contextmanager
        def open_measure() -> Iterator[Measure]:
            warehouse = WarehouseResource().get()
            with source.naming_failures(ConnectionError):
                self.drain(source, warehouse)
            yield lambda _stream, after, threshold: self._pending(
                warehouse, source, after, threshold
            )

        sensor = build_size_sensor(
            name=f"{source.name}__size_sensor",
            spec=self.batch,
            streams=[SizeStream(self.table, [asset.key], partitions)],
            open_measure=open_measure,
            minimum_interval_seconds=self.sensor_interval_seconds,
            description=f"Drains MQTT {', '.join(self.topics)} into {source.name}._buffer "
            f"(acknowledged after the commit) and cuts ranges of "
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

    def drain(self, source: SourceContext, warehouse: Warehouse) -> int:
        """Commit what the broker holds for this source to its buffer, then acknowledge it."""
        from ingestion_platform.sources.mqtt.connectors.mqtt import MqttSettings, drain

        settings = MqttSettings(
            host=source.resolve(self.host, "host"),
            port=self.port,
            topics=self.topics,
            client_id=self.client_id or f"ingestion_platform-{source.name}",
            username=source.resolve(self.username, "username") if self.username else None,
            password=source.resolve(self.password, "password") if self.password else None,
            tls=self._tls_files(source),
        )

        def commit(messages: list[Any]) -> None:
            buffered = [
                message_buffer.BufferedMessage(m.message_id, m.topic, m.payload, m.arrived_ms)
                for m in messages
            ]
            message_buffer.append(warehouse, source.name, buffered)

        return drain(settings, commit, max_seconds=self.drain_seconds)

    def _tls_files(self, source: SourceContext) -> "TlsFiles | None":
        from ingestion_platform.sources.mqtt.connectors.mqtt import TlsFiles

        if self.tls is False:
            return None
        if self.tls is True:
            return TlsFiles()
        files = self.tls

        def path(value: Setting | None, field: str) -> str | None:
            return source.resolve(value, f"tls.{field}") if value is not None else None

        if (files.cert_file is None) != (files.key_file is None):
            raise source.error("tls", "cert_file and key_file go together", "set both, or neither")
        return TlsFiles(
            ca_file=path(files.ca_file, "ca_file"),
            cert_file=path(files.cert_file, "cert_file"),
            key_file=path(files.key_file, "key_file"),
        )

    def _pending(
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
        # The broker tells no client how much it queues for a session, so the lag is what
        # the buffer holds past the newest cut (drained, not yet landed).
        assert partitions.name is not None
        after = int(latest_slice_end(instance.get_dynamic_partitions(partitions.name)) or 0)
        count, _, newest, oldest = message_buffer.waiting_after(
            WarehouseResource().get(), source.name, after, 2**62
        )
        return SourceLag(count, "messages", oldest, detail={"buffer_newest": newest or 0})

    def _asset(
        self, source: SourceContext, partitions_def: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        @dg.asset(
            key=[source.name, self.table],
            group_name=source.name,
            kinds={"mqtt", "duckdb"},
            description=f"Messages of MQTT {', '.join(self.topics)}, one partition per range "
            f"of {self.batch.size_threshold:,} buffered messages; bad messages go to "
            f"{source.name}._quarantine.",
            partitions_def=partitions_def,
            metadata={"source_file": source.defs_file},
            **asset_health(  # type: ignore[arg-type]
                dg.AssetKey([source.name, self.table]),
                self.batch,
                self.health,
                self.sensor_interval_seconds,
                quarantines=True,
            ),
        )
        def _land_mqtt(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands one partition's exact range of the buffer. (Not a docstring: the
            # description is set above, and Dagster would parse a docstring for every asset.)
            from ingestion_platform.sources.mqtt.run import land_buffer_range

            cut = CursorSlice.from_key(context.partition_key)
            target = warehouse.get()
            existed = target.table_exists(source.name, self.table)
            report, metadata = land_buffer_range(
                target, source.name, self.table, context.partition_key, int(cut.lo or 0),
                int(cut.hi), self.decoding, self.max_record_bytes, dict(self.columns or {}),
            )  # fmt: skip
            context.log.info(
                f"{source.name}.{self.table}: buffer {int(cut.lo or 0) + 1}..{cut.hi}: landed "
                f"{report.rows_landed} rows, quarantined {report.rows_quarantined}"
            )
            checks = stream_checks(
                context.asset_key, target, source.name, self.table, context.partition_key,
                report, existed, self.health.quarantine_warn_share,
            )  # fmt: skip
            return dg.MaterializeResult(metadata=metadata, check_results=checks)

        return _land_mqtt
