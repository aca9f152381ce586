"""The sensor behind every size batch: cut a new partition once enough data is pending.

A source kind supplies one function, "how much is pending after this high-water mark, and
where does a full batch end". This module turns it into dynamic partitions and run
requests. The high-water mark is not kept in the sensor cursor: it is the end of the
newest partition key, which lives in the Dagster instance. Resetting the sensor therefore
never re-cuts or skips data; the cursor only remembers since when a partial batch has
been waiting (for `max_wait`).

While a run of a stream is queued or starting, its new data is not cut; once the run has
started, everything pending (up to MAX_BATCHES_PER_RUN batches) is cut as one slice, so a
source that falls behind lands more per run instead of queueing more runs (core/backlog.py).

A cut is final only together with its run. Dagster commits a tick by adding its partitions
first and creating the runs after: a daemon that dies in between leaves partitions that no
run will ever land, past the high-water mark. The newest partitions with no run of their
run key are therefore asked for again, under the same key and run key. (A preview adds
nothing, so it consumes nothing.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from ingestion_platform.core.backlog import (
    MAX_BATCHES_PER_RUN,
    held_note,
    stream_tags,
    waiting_runs,
)
from ingestion_platform.core.batching import BatchSpec, CursorSlice, latest_slice_end
from ingestion_platform.core.pending import Pending

# A backlog is landed as one slice of at most this many full batches (core/backlog.py).
MAX_CUTS_PER_TICK = MAX_BATCHES_PER_RUN


Measure = Callable[[str, Any, int], Pending]


@dataclass(frozen=True)
class SizeStream:
    """One independently batched stream (a table, an endpoint) and the assets it feeds."""

    name: str
    asset_keys: list[dg.AssetKey]
    partitions_def: dg.DynamicPartitionsDefinition


@dataclass(frozen=True)
class Plan:
    """The slices to cut now, since when a partial batch waits, and how much is left over."""

    cuts: list[CursorSlice]
    waiting_since: float | None
    left_pending: int


def plan_cuts(
    *,
    after: Any,
    measure: Callable[[Any, int], Pending],
    spec: BatchSpec,
    waiting_since: float | None,
    now: float,
) -> Plan:
    """Cut every full batch pending after `after`, and a partial one once max_wait is up."""
    cuts: list[CursorSlice] = []
    threshold = spec.size_threshold
    while len(cuts) < MAX_CUTS_PER_TICK:
        pending = measure(after, threshold)
        if pending.full_batch_end is not None:
            cuts.append(CursorSlice(after, pending.full_batch_end))
            after, waiting_since = pending.full_batch_end, None
            continue
        if pending.rows == 0:
            return Plan(cuts, None, 0)
        waiting_since = waiting_since or now
        max_wait = spec.max_wait_seconds
        if max_wait is not None and now - waiting_since >= max_wait:
            cuts.append(CursorSlice(after, pending.newest))
            return Plan(cuts, None, 0)
        return Plan(cuts, waiting_since, pending.rows)
    return Plan(cuts, waiting_since, 0)


def waiting_message(
    spec: BatchSpec, unit: str, pending: int, waiting_since: float | None, stream: str = ""
) -> str:
    """E.g. `less than 1,000 records pending: 412 of 1,000; max_wait cuts at 19:03 UTC`."""
    threshold = spec.size_threshold
    text = f"less than {threshold:,} {unit} pending: {pending:,} of {threshold:,}"
    if spec.max_wait_seconds is not None and waiting_since is not None:
        due = datetime.fromtimestamp(waiting_since + spec.max_wait_seconds, UTC)
        text += f"; max_wait cuts at {due:%H:%M} UTC"
    return f"{stream}: {text}" if stream else text


def build_size_sensor(
    *,
    name: str,
    spec: BatchSpec,
    streams: list[SizeStream],
    open_measure: Callable[[], AbstractContextManager[Measure]],
    minimum_interval_seconds: int,
    description: str,
    running: bool,
    unit: str = "rows",
) -> dg.SensorDefinition:
    """A sensor that cuts partitions of `spec.size_threshold` `unit` for each stream."""

    @dg.sensor(
        name=name,
        asset_selection=[key for stream in streams for key in stream.asset_keys],
        minimum_interval_seconds=minimum_interval_seconds,
        description=description,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
    )
    def _size_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        waiting = _read_cursor(context.cursor)
        run_requests: list[dg.RunRequest] = []
        partition_requests: list[dg.AddDynamicPartitionsRequest] = []
        waits: list[str] = []
        with open_measure() as measure:
            for stream in streams:
                keys = context.instance.get_dynamic_partitions(stream.partitions_def.name)
                again = _orphans(context.instance, stream, keys)
                run_requests.extend(_requests(stream, again))
                held = waiting_runs(context.instance, stream.partitions_def.name)
                if held or again:
                    waits.append(held_note(stream.partitions_def.name, held + len(again)))
                    continue
                plan = plan_cuts(
                    after=latest_slice_end(keys),
                    measure=lambda after, n, s=stream.name: measure(s, after, n),
                    spec=spec,
                    waiting_since=waiting.get(stream.name),
                    now=time.time(),
                )
                _remember(waiting, stream.name, plan.waiting_since)
                # Several full batches pending means the runs fell behind: one run lands
                # them all, as one slice (core/backlog.py).
                new_keys = [coalesce(plan.cuts).key] if plan.cuts else []
                if new_keys:
                    partition_requests.append(stream.partitions_def.build_add_request(new_keys))
                run_requests.extend(_requests(stream, new_keys))
                name = stream.name if len(streams) > 1 else ""
                waits.append(
                    waiting_message(spec, unit, plan.left_pending, plan.waiting_since, name)
                )
        # Shown in the UI: since when each stream's partial batch has waited, as UTC times.
        cursor = json.dumps(
            {
                name: datetime.fromtimestamp(since, UTC).isoformat()
                for name, since in waiting.items()
            },
            sort_keys=True,
        )
        if not run_requests:
            return dg.SensorResult(skip_reason=dg.SkipReason(" | ".join(waits)), cursor=cursor)
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=partition_requests,
            cursor=cursor,
        )

    return _size_sensor


def coalesce(cuts: list[CursorSlice]) -> CursorSlice:
    """Consecutive slices as the one slice that covers them."""
    return CursorSlice(cuts[0].lo, cuts[-1].hi)


def _remember(waiting: dict[str, float], stream: str, since: float | None) -> None:
    if since is None:
        waiting.pop(stream, None)
    else:
        waiting[stream] = since


def _orphans(instance: dg.DagsterInstance, stream: SizeStream, keys: list[str]) -> list[str]:
    """The newest partitions, after the newest one whose run exists, that have no run.

    Only the last few ticks' worth is looked at, and only past a partition with a run (or
    from the first partition), so a run deleted long ago is never asked for again.
    """
    recent = keys[-2 * MAX_CUTS_PER_TICK :]
    if not recent:
        return []
    asked = {_run_key(stream, key): key for key in recent}
    runs = instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: list(asked)}))
    created = {asked[run.tags[RUN_KEY_TAG]] for run in runs if run.tags[RUN_KEY_TAG] in asked}
    if not created and len(keys) > len(recent):
        return []  # runs older than these were deleted: nothing tells what died
    newest = max((recent.index(key) for key in created), default=-1)
    return recent[newest + 1 :]


def _run_key(stream: SizeStream, key: str) -> str:
    # The key is the slice itself, so a run key built from it is never reused.
    return f"{stream.partitions_def.name}:{key}"


def _requests(stream: SizeStream, keys: list[str]) -> Iterator[dg.RunRequest]:
    for key in keys:
        yield dg.RunRequest(
            run_key=_run_key(stream, key),
            partition_key=key,
            asset_selection=stream.asset_keys,
            tags=stream_tags(stream.partitions_def.name),
        )


def _read_cursor(cursor: str | None) -> dict[str, float]:
    """Since when each stream has waited, as epoch seconds (older cursors stored them so)."""
    stored = json.loads(cursor or "{}")
    return {
        name: since if isinstance(since, int | float) else datetime.fromisoformat(since).timestamp()
        for name, since in stored.items()
    }
