"""What an MQTT run does: land a partition's exact range of the source's message buffer."""

from __future__ import annotations

import time
from typing import Any, Literal

import dagster as dg

from ingestion_platform.core import message_buffer
from ingestion_platform.core.message_landing import StreamLandingReport, land_stream_slice
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.kinesis.connectors.decode import decode_columns
from ingestion_platform.sources.kinesis.run import landing_metadata


def land_buffer_range(
    warehouse: Warehouse,
    dataset: str,
    table: str,
    key: str,
    lo: int,
    hi: int,
    decoding: Literal["json", "jsonl", "raw"],
    max_record_bytes: int,
    column_types: dict[str, str],
) -> tuple[StreamLandingReport, dict[str, Any]]:
    """Replace partition `key` with the buffered messages `(lo, hi]`."""
    started = time.monotonic()
    # The stream pipeline's origin columns: the buffer as the shard, the topic as the key.
    buffered = message_buffer.read_range(warehouse, dataset, lo, hi)
    decoded = decode_columns(
        message_buffer.BUFFER_TABLE,
        buffered["seq"],
        buffered["topic"],
        buffered["arrived_ms"],
        buffered["payload"],
        decoding=decoding,
        max_record_bytes=max_record_bytes,
    )
    report = land_stream_slice(
        warehouse=warehouse,
        dataset=dataset,
        table=table,
        batch_key=key,
        decoded=decoded,
        decoding=decoding,
        column_types=column_types,
    )
    report.duration_seconds = time.monotonic() - started
    extra: dict[str, dg.RawMetadataValue] = {"buffer_first": lo + 1, "buffer_last": hi}
    return report, landing_metadata(report, table, extra)
