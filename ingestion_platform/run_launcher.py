"""Dagster's default run launcher, with run workers the daemon can health-check.

The default launcher starts each run in a process on this machine but cannot tell the
daemon whether that process is still alive. A run worker killed with `kill -9` (or by the
OOM killer) then stays STARTED for ever, holding its `duckdb_warehouse` pool slot, and
every later run waits behind it. This launcher answers the daemon's health check from the
process table: the run worker announced its pid in the run's event log ("Started process
for run (pid: N)"), and a pid that is gone, or now belongs to a process that is not this
run's worker, means the worker died. Run monitoring then marks the run failed, its slot is
freed (`free_slots_after_run_end_seconds`) and run retries start it again.

It only sees processes on this machine, which is where the default launcher puts them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher, EventLogEntry
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from ingestion_platform.slot_guard import gone_from_here, logged_worker, on_this_machine, pid_of

STARTED_PREFIX = "Started process for run"


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches runs like DefaultRunLauncher; reports a dead run worker to run monitoring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        events = self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        pid = _started_pid(events)
        if pid is not None:
            alive = worker_alive(pid, run.run_id)
        else:
            # Not launched here, e.g. by `dagster asset materialize`: its process named itself
            # in the run's log (slot_guard.py). Left dead, it would hold its pool slot, and
            # every queued run would wait behind it.
            identity = logged_worker(events)
            if identity is None or not on_this_machine(identity):
                # Not started yet, or on a machine whose processes cannot be seen from here.
                return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker pid recorded yet")
            pid, alive = pid_of(identity), not gone_from_here(identity)
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker process {pid} is gone: it was killed (e.g. kill -9) or crashed "
            "before it could report why; its transaction never committed, so the warehouse is "
            "as it was, and run retries land the slice again",
            run_worker_id=str(pid),
        )


def _started_pid(events: Sequence[EventLogEntry]) -> int | None:
    """The pid the launcher's worker announced ("Started process for run (pid: N)")."""
    for entry in reversed(events):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(STARTED_PREFIX):
            continue
        pid = event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(str(pid.value))
    return None


def worker_alive(pid: int, run_id: str) -> bool:
    """Whether `pid` is a live process that is this run's worker (pids are reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else: cannot be told apart
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return True  # no /proc here: trust the signal check
    if "State:\tZ" in status.read_text():
        return False  # a zombie: dead, not yet reaped by its parent
    cmdline = (
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    )
    # The worker's command line carries the run id (`dagster api execute_run {...}`); a
    # worker started another way is given the benefit of the doubt.
    return run_id in cmdline or "execute_run" not in cmdline
