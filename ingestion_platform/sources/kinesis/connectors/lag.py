"""Records waiting in a stream past given positions, per shard, read at the stream itself.

Every listed shard is read forward from its position (or from the start, for a shard with
none: a child never read, a shard the cuts never reached), up to a cap: whether a whole
batch waits is all a lag check needs, and a backlog of millions must not be read to count
it. Closed shards are read to their end past any empty pages (kinesis.py).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisReader, Shard

MEASURE_SECONDS = 20


@dataclass(frozen=True)
class ShardWaiting:
    """What waits in one shard past its position."""

    shard_id: str
    records: int
    bytes: int
    # Arrival (epoch ms) of the oldest record waiting; None when none waits.
    oldest_ms: int | None
    # Stopped at the cap or the time limit: at least this much waits.
    capped: bool
    millis_behind: int


def waiting_records(
    reader: KinesisReader,
    shards: list[Shard],
    positions: dict[str, str],
    since: datetime | None,
    *,
    cap_records: int | None = None,
    cap_bytes: int | None = None,
    seconds: float = MEASURE_SECONDS,
    threads: int = 8,
) -> list[ShardWaiting]:
    """Per shard: records after `positions[shard]` (from `since` or the start without one)."""
    deadline = time.monotonic() + seconds

    def measure(shard: Shard) -> ShardWaiting:
        after = positions.get(shard.shard_id)
        read = reader.read(
            shard,
            after=after,
            since=since if after is None else None,
            max_records=cap_records,
            max_bytes=cap_bytes,
            deadline=deadline,
        )
        records = read.records
        full = (cap_records is not None and len(records) >= cap_records) or (
            cap_bytes is not None and read.taken_bytes >= cap_bytes
        )
        return ShardWaiting(
            shard.shard_id,
            len(records),
            read.taken_bytes,
            min((r.arrival_ms for r in records), default=None),
            full or read.stopped_early,
            read.millis_behind,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shards) or 1))) as pool:
        return list(pool.map(measure, shards))
