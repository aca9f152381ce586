"""What a RabbitMQ run does: land a partition's exact range of a stream or of the buffer."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.message_landing import (
    MessageDecoding,
    StreamLandingReport,
    land_stream_slice,
)
from ingestion_platform.core.warehouse import BATCH_KEY_COLUMN, Warehouse, quote_identifier
from ingestion_platform.sources.kinesis.connectors.decode import decode_columns
from ingestion_platform.sources.kinesis.run import landing_metadata
from ingestion_platform.sources.rabbitmq.connectors.amqp_stream import (
    RetentionDropped,
    StreamMessage,
    StreamSettings,
    first_after,
    read_range,
)


def land_stream_range(
    settings: StreamSettings,
    decoding: MessageDecoding,
    source: SourceContext,
    warehouse: Warehouse,
    table: str,
    key: str,
    lo: int,
    hi: int,
) -> tuple[StreamLandingReport, dict[str, Any]]:
    """Replace partition `key` with the stream's offsets `lo .. hi - 1`, or fail untouched."""
    started = time.monotonic()
    try:
        messages = read_range(settings, lo, hi)
        _check_nothing_landed_is_gone(warehouse, source.name, table, key, settings, messages)
    except RetentionDropped as error:
        raise SourceFailure(
            f"source {source.name!r} ({source.defs_file}): partition {key}: {error}. The rows "
            "landed for it before stay as they were; raise the stream's max-age or "
            "max-length-bytes so a slice outlives the time it may wait"
        ) from None
    # The stream pipeline's origin columns: the stream as the shard, the offset as the
    # sequence number, the routing key as the partition key.
    decoded = decode_columns(
        settings.stream,
        [m.offset for m in messages],
        [m.routing_key for m in messages],
        [m.time_ms for m in messages],
        [m.body for m in messages],
        decoding=decoding.decoding,
        max_record_bytes=decoding.max_record_bytes,
    )
    report = land_stream_slice(
        warehouse=warehouse,
        dataset=source.name,
        table=table,
        batch_key=key,
        decoded=decoded,
        decoding=decoding.decoding,
        column_types=decoding.column_types,
    )
    report.duration_seconds = time.monotonic() - started
    extra: dict[str, dg.RawMetadataValue] = {
        "stream": settings.stream,
        "first_offset": lo,
        "last_offset": hi - 1,
    }
    return report, landing_metadata(report, table, extra)


def _check_nothing_landed_is_gone(
    warehouse: Warehouse,
    dataset: str,
    table: str,
    key: str,
    settings: StreamSettings,
    messages: list[StreamMessage],
) -> None:
    """A replay must not land less than before: rows landed from offsets the stream no
    longer holds mean retention dropped them (the only check for the first partition,
    which starts wherever the stream started)."""
    if not warehouse.table_exists(dataset, table):
        return
    relation = f"{quote_identifier(dataset)}.{quote_identifier(table)}"
    ((landed_first,),) = warehouse.query(
        f"select min(cast(_sequence_number as bigint)) from {relation} "  # noqa: S608
        f"where {quote_identifier(BATCH_KEY_COLUMN)} = ?",
        (key,),
    )
    if messages:
        first: int | None = messages[0].offset
    else:
        oldest = first_after(settings, 0)
        first = oldest.offset if oldest else None
    if landed_first is not None and (first is None or landed_first < first):
        now = f"offset {first}" if first is not None else "nothing (it is empty)"
        raise RetentionDropped(
            f"this slice landed messages from offset {landed_first}, and stream "
            f"{settings.stream!r} now starts at {now}: its retention dropped them, so it "
            "cannot be read again exactly"
        )
