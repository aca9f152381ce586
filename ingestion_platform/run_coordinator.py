"""Dagster's run queue, with a person's runs ahead of schedule and sensor runs.

On a busy machine sensors can queue runs faster than they finish; a partition someone
materialises or backfills from the UI would otherwise wait behind all of them (198 s for
a 4 s run in #18). Runs a schedule or sensor asks for are queued at a lower priority, set
here once for every source rather than by each user. Dagster dequeues runs by this
priority and grants `duckdb_warehouse` pool slots by it as well, so a click also goes
first to the warehouse. A priority set explicitly on a run is kept.
"""

from __future__ import annotations

from dagster import DagsterRun
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.tags import PRIORITY_TAG, SCHEDULE_NAME_TAG, SENSOR_NAME_TAG

AUTOMATED_PRIORITY = -1


class PriorityRunCoordinator(QueuedRunCoordinator):
    """Queues runs like QueuedRunCoordinator; schedule and sensor runs at a lower priority."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        automated = SENSOR_NAME_TAG in run.tags or SCHEDULE_NAME_TAG in run.tags
        if automated and PRIORITY_TAG not in run.tags:
            self._instance.add_run_tags(run.run_id, {PRIORITY_TAG: str(AUTOMATED_PRIORITY)})
            reloaded = self._instance.get_run_by_id(run.run_id)
            assert reloaded is not None
            context = SubmitRunContext(reloaded, context.workspace)
        return super().submit_run(context)
