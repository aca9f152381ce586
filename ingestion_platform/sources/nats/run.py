"""What a JetStream run does: read a partition's exact sequence range, decode it, land it."""

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
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.kinesis.connectors.decode import decode_columns
from ingestion_platform.sources.kinesis.run import landing_metadata
from ingestion_platform.sources.nats.connectors.jetstream import (
    JetStreamSettings,
    RetentionDropped,
    read_range,
)


def land_range(
    settings: JetStreamSettings,
    decoding: MessageDecoding,
    source: SourceContext,
    warehouse: Warehouse,
    table: str,
    key: str,
    lo: int,
    hi: int,
) -> tuple[StreamLandingReport, dict[str, Any]]:
    """Replace partition `key` with the stream's messages `(lo, hi]`, or fail untouched."""
    started = time.monotonic()
    try:
        messages = read_range(settings, lo, hi)
    except RetentionDropped as error:
        raise SourceFailure(
            f"source {source.name!r} ({source.defs_file}): partition {key}: {error}. The rows "
            "landed for it before stay as they were; raise the stream's max_age or max_msgs "
            "so a slice outlives the time it may wait"
        ) from None
    # The stream pipeline's origin columns: the stream as the shard, the subject as the key.
    decoded = decode_columns(
        settings.stream,
        messages.sequences,
        messages.subjects,
        messages.times_ms,
        messages.payloads,
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
        "first_sequence": lo + 1,
        "last_sequence": hi,
    }
    if settings.subject:
        extra["subject"] = settings.subject
    return report, landing_metadata(report, table, extra)
