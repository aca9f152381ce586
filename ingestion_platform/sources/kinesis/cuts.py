"""Where the next size partitions of a stream end: exactly N records (or bytes) across shards.

Every shard that may be read is read forward from its last cut position, at most one
batch's worth, and the pending records are merged in arrival order; the first N form the
cut. Each shard has buffered at least N records (or is at its tip), so the first N in
arrival order are all in the buffers. A child shard is read only once all its parents are
closed, cut to their end and landed; a closed shard with nothing left is retired.

A tick has a time budget (the daemon gives a sensor 60 s): once it is spent no shard is
read again, the full batches already read are cut, and the rest waits for the next tick.
Every shard is still read once per tick, so a tick always makes progress; if even that
does not fill one batch, what was read is cut as a smaller partition.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ingestion_platform.core.backlog import MAX_BATCHES_PER_RUN
from ingestion_platform.sources.kinesis.connectors.kinesis import (
    KinesisReader,
    KinesisRecord,
    Shard,
)
from ingestion_platform.sources.kinesis.manifest import ShardPosition, ShardRange

# A backlog is landed as one partition of at most this many batches (core/backlog.py).
MAX_CUTS_PER_TICK = MAX_BATCHES_PER_RUN


@dataclass
class _ShardBuffer:
    shard: Shard
    after: str | None
    records: deque[KinesisRecord] = field(default_factory=deque)
    at_tip: bool = False
    ended: bool = False
    # Not read on this tick: the budget was spent (or a closed shard never said its end).
    stopped: bool = False
    reads: int = 0
    millis_behind: int = 0

    @property
    def size(self) -> int:
        return sum(len(r.data) for r in self.records)


@dataclass
class CutPlan:
    """The partitions to cut now, the shards to retire, and what stays pending."""

    cuts: list[list[ShardRange]]
    retired: list[str]
    pending_records: int
    pending_bytes: int
    oldest_pending_ms: int | None
    # The budget ran out: how many shards were left before their tip or end.
    out_of_time: bool = False
    unfinished_shards: int = 0


def readable_shards(shards: list[Shard], positions: dict[str, ShardPosition]) -> list[Shard]:
    """Shards to read now: not yet cut to their end, with every parent retired."""
    listed = {shard.shard_id for shard in shards}
    ready = []
    for shard in shards:
        position = positions.get(shard.shard_id)
        if position is not None and position.ended:
            continue
        waiting_for = [
            parent
            for parent in shard.parents
            # A parent no longer listed has passed the stream's retention: nothing to wait for.
            if parent in listed and not (parent in positions and positions[parent].ended_and_landed)
        ]
        if not waiting_for:
            ready.append(shard)
    return ready


def plan_cuts(
    *,
    reader: KinesisReader,
    shards: list[Shard],
    positions: dict[str, ShardPosition],
    since: datetime | None,
    unit: str,
    threshold: int,
    cut_partial: Callable[[int | None], bool],
    threads: int = 8,
    deadline: float | None = None,
) -> CutPlan:
    """Cut full batches (at most MAX_CUTS_PER_TICK), then a partial one if `cut_partial`.

    `cut_partial` gets the arrival time (epoch ms) of the oldest pending record. Reading
    stops at `deadline` (`time.monotonic()`), after each shard's first read.
    """
    buffers = [
        _ShardBuffer(shard, positions[shard.shard_id].last_sequence)
        if shard.shard_id in positions
        else _ShardBuffer(shard, None)
        for shard in readable_shards(shards, positions)
    ]
    by_bytes = unit == "bytes"

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    def fill(buffer: _ShardBuffer) -> None:
        while not (buffer.at_tip or buffer.ended or buffer.stopped):
            have = buffer.size if by_bytes else len(buffer.records)
            if have >= threshold:
                return
            if buffer.reads and out_of_time():
                buffer.stopped = True
                return
            last = buffer.records[-1].sequence if buffer.records else buffer.after
            read = reader.read(
                buffer.shard,
                after=last,
                since=since if last is None else None,
                max_records=None if by_bytes else threshold - have,
                max_bytes=threshold - have if by_bytes else None,
                deadline=deadline,
            )
            buffer.reads += 1
            buffer.records.extend(read.records)
            buffer.millis_behind = read.millis_behind
            buffer.ended = read.reached_end
            buffer.stopped = read.stopped_early
            # Fewer than asked for, not at the end, not stopped: the read is at the tip.
            got = read.bytes if by_bytes else len(read.records)
            buffer.at_tip = not (read.reached_end or read.stopped_early) and got < threshold - have

    cuts: list[list[ShardRange]] = []
    retired: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(buffers) or 1))) as pool:
        while len(cuts) < MAX_CUTS_PER_TICK:
            list(pool.map(fill, buffers))
            for buffer in [b for b in buffers if b.ended and not b.records]:
                if buffer.shard.shard_id not in retired:
                    retired.append(buffer.shard.shard_id)
            buffers = [b for b in buffers if not (b.ended and not b.records)]
            pending = sum((b.size if by_bytes else len(b.records)) for b in buffers)
            oldest = min((b.records[0].arrival_ms for b in buffers if b.records), default=None)
            if pending >= threshold:
                cuts.append(_take(buffers, threshold, by_bytes))
                continue
            if pending and cut_partial(oldest):
                cuts.append(_take(buffers, None, by_bytes))
                continue
            spent = out_of_time()
            if pending and spent and not cuts:
                # Not even one batch fits the budget: land what was read, to make progress.
                cuts.append(_take(buffers, None, by_bytes))
                continue
            return CutPlan(
                cuts,
                retired,
                sum(len(b.records) for b in buffers),
                sum(b.size for b in buffers),
                oldest,
                out_of_time=spent,
                unfinished_shards=sum(not (b.at_tip or b.ended) for b in buffers),
            )
    # MAX_CUTS_PER_TICK reached: the next tick goes on after these cuts.
    return CutPlan(
        cuts,
        retired,
        sum(len(b.records) for b in buffers),
        sum(b.size for b in buffers),
        None,
        out_of_time=out_of_time(),
        unfinished_shards=sum(not (b.at_tip or b.ended) for b in buffers),
    )


def merge_cuts(cuts: list[list[ShardRange]]) -> list[ShardRange]:
    """Consecutive cuts as one: per shard, from the first cut's start to the last one's end."""
    merged: dict[str, ShardRange] = {}
    for cut in cuts:
        for part in cut:
            before = merged.get(part.shard_id)
            merged[part.shard_id] = (
                part
                if before is None
                else replace(
                    before,
                    last_sequence=part.last_sequence,
                    records=before.records + part.records,
                    bytes=before.bytes + part.bytes,
                    last_arrival=part.last_arrival,
                    shard_ended=part.shard_ended,
                    lag_ms=part.lag_ms,
                )
            )
    return [merged[shard] for shard in sorted(merged)]


def _take(buffers: list[_ShardBuffer], threshold: int | None, by_bytes: bool) -> list[ShardRange]:
    """Pop the first `threshold` records (or bytes) in arrival order (all if None)."""
    heap = [
        (b.records[0].arrival_ms, b.shard.shard_id, index)
        for index, b in enumerate(buffers)
        if b.records
    ]
    heapq.heapify(heap)
    taken: dict[int, list[KinesisRecord]] = {}
    amount = 0
    while heap and (threshold is None or amount < threshold):
        _, _, index = heapq.heappop(heap)
        record = buffers[index].records.popleft()
        taken.setdefault(index, []).append(record)
        amount += len(record.data) if by_bytes else 1
        if buffers[index].records:
            heapq.heappush(heap, (buffers[index].records[0].arrival_ms, record.shard_id, index))
    ranges = []
    for index, records in sorted(taken.items(), key=lambda item: buffers[item[0]].shard.shard_id):
        buffer = buffers[index]
        newest = buffer.records[-1].arrival_ms if buffer.records else records[-1].arrival_ms
        ranges.append(
            ShardRange(
                shard_id=buffer.shard.shard_id,
                first_sequence=records[0].sequence,
                last_sequence=records[-1].sequence,
                records=len(records),
                bytes=sum(len(r.data) for r in records),
                first_arrival=_time(records[0].arrival_ms),
                last_arrival=_time(records[-1].arrival_ms),
                shard_ended=buffer.ended and not buffer.records,
                # Behind the tip: what the last read reported, plus what is buffered past
                # the cut; 0 when the cut reaches the tip.
                lag_ms=buffer.millis_behind + newest - records[-1].arrival_ms,
            )
        )
        buffer.after = records[-1].sequence
    return ranges


def _time(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)
