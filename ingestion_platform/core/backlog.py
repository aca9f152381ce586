"""Coalescing when behind: a sensor cuts nothing new while its own runs wait to start.

Each micro-batch is a run with a fixed start-up cost. On a busy machine runs start slower
than sensors can cut, and one run per cut would grow the queue without limit (152 runs
created, 71 finished, in #18). So every sensor-driven kind keeps one rule: while a run it
asked for is still queued or starting, it cuts nothing new and the data keeps waiting at
the source; once that run has started, the next tick cuts everything pending, up to
`MAX_BATCHES_PER_RUN` batches, as one partition that one run lands. A partition is still
an exact, replayable slice, only a larger one: the machine lands more per run, not more
runs, and a source never has more than one run waiting while another one works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import dagster as dg

# Runs a sensor asked for carry the stream they land, so its waiting runs can be counted.
STREAM_TAG = "ingestion_platform/stream"
# A backlog is landed in slices of at most this many batches, so a run stays bounded.
MAX_BATCHES_PER_RUN = 20
_WAITING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]

T = TypeVar("T")


def waiting_runs(instance: dg.DagsterInstance, stream: str) -> int:
    """How many runs of `stream` are queued or starting."""
    filters = dg.RunsFilter(statuses=_WAITING, tags={STREAM_TAG: stream})
    return instance.get_runs_count(filters=filters)


def held_note(stream: str, waiting: int) -> str:
    """The skip reason of a stream whose cuts are held."""
    return (
        f"{stream}: holding new cuts while {waiting} run(s) of it wait to start; what is "
        "pending then lands in one run"
    )


def stream_tags(stream: str) -> dict[str, str]:
    return {STREAM_TAG: stream}


def coalesced(batches: Sequence[T]) -> list[T]:
    """The batches a single run lands now: the first `MAX_BATCHES_PER_RUN` of them."""
    return list(batches[:MAX_BATCHES_PER_RUN])
