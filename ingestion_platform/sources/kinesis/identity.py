"""Which stream the manifest's positions belong to: a stream deleted and created again under
the same name is a new stream, read from its start.

Its sequence numbers may start over below the stored positions (moto), or be unknown to
the peer (kinesis-mock refuses them as a missing stream): either way, reading on from the
old positions would skip or fail silently. The stream's creation time, stored in the
manifest (`@stream`), tells the two apart; a manifest written before it was stored falls
back to the shards' sequence ranges, which the old positions must lie within.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from ingestion_platform.sources.kinesis import manifest
from ingestion_platform.sources.kinesis.connectors.kinesis import Shard, sequence_int


@dataclass(frozen=True)
class Epoch:
    """Where the current stream's bookkeeping starts, and what to say about a new stream."""

    start: datetime
    recreated_note: str | None = None


def current_epoch(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    stream: str,
    created: datetime,
    shards: list[Shard],
    start_at_latest: bool,
) -> Epoch:
    """The current stream's epoch; records a new one when the stream was created again."""
    known, epoch = manifest.stream_identity(connection, dataset)
    if known is not None and epoch is not None:
        if _same_instant(known, created):
            return Epoch(epoch)
        was = f"the cut positions were of the stream created at {_utc(known)}"
    elif _positions_fit(manifest.positions(connection, dataset), shards):
        manifest.record_stream(connection, dataset, created, manifest.FIRST_EPOCH)
        return Epoch(manifest.FIRST_EPOCH)
    else:
        was = "the cut positions lie outside its shards' sequence numbers"
    now = datetime.now(UTC)
    dropped = manifest.unlanded_keys(connection, dataset)
    manifest.record_stream(connection, dataset, created, now)
    if start_at_latest:
        # Every record of the new stream came after the old one was watched: read them all.
        manifest.record_origin(connection, dataset, created, cut_at=now)
    note = (
        f"stream {stream!r} was deleted and created again (now created at {_utc(created)}; "
        f"{was}): reading the new stream from its start"
    )
    if dropped:
        note += (
            f"; {len(dropped)} partition(s) cut from the old stream and not landed cannot be "
            f"landed any more ({', '.join(dropped[:3])}{', …' if len(dropped) > 3 else ''})"
        )
    return Epoch(now, note)


def _positions_fit(positions: dict[str, manifest.ShardPosition], shards: list[Shard]) -> bool:
    """Whether every stored position lies within the sequence range of its listed shard."""
    for shard in shards:
        position = positions.get(shard.shard_id)
        if position is None or position.last_sequence is None:
            continue
        last = sequence_int(position.last_sequence)
        if last < sequence_int(shard.starting_sequence):
            return False
        if shard.last_possible is not None and last > shard.last_possible:
            return False
    return True


def _same_instant(stored: datetime, created: datetime) -> bool:
    # Stored as DuckDB microseconds; AWS gives milliseconds.
    return abs(stored.timestamp() - created.timestamp()) < 0.001


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"
