"""Dagster's in-process executor, plus a guard that gives back pool slots a dead run still holds.

A run worker killed with -9 keeps its `duckdb_warehouse` slot. Under the daemon, run
monitoring notices and frees it (run_launcher.py). A run started with `dagster asset
materialize` is watched by nothing, so the next run waited for ever, saying only "Step
blocked by limit for pool duckdb_warehouse" while it spun a core.

Each run now names the process that runs it, in its log (`process_identity`, the metadata of
its first engine event). At its start, before its steps claim a slot, it looks at the runs
holding one:
- a run still marked in progress whose named process is gone from this machine is marked
  failed and its slots are freed, with a line in both runs' logs;
- a run that ended more than a few seconds ago and still holds a slot has it freed, as the
  daemon's `free_slots_after_run_end_seconds` would.

A run on another machine or in another container (another PID namespace), or one started
before this guard, is never judged: its process cannot be seen from here.

While a slot is taken, Dagster 1.13's step loop re-checks its claim every few seconds but
does not sleep in between (its wait is `min(0, …)`): a waiting run spun a core, on a machine
whose other core lands the run it waits for. The run's concurrency context here waits
until the next re-check instead.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    _core_in_process_executor_creation,
)
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor import in_process
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus

WORKER_KEY = "ingestion_platform/worker"
# As dagster.yaml's free_slots_after_run_end_seconds: a run that just ended frees its own.
FINISHED_GRACE_SECONDS = 5
IN_PROGRESS = {DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING}


def process_identity(pid: int | str = "self") -> str | None:
    """`boot id/PID namespace/pid/start time` of a process; None where /proc cannot tell.

    The start time (clock ticks since boot) tells a reused pid apart; the boot id and the
    namespace tell this machine and container apart from others.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it do not.
    state, *fields = stat.rsplit(")", 1)[1].split()
    if state == "Z":
        return None  # dead, not yet reaped by its parent
    number = os.getpid() if pid == "self" else pid
    return f"{boot}/{namespace}/{number}/{fields[18]}"


def pid_of(identity: str) -> int:
    """The pid in a `process_identity`."""
    return int(identity.split("/")[2])


def on_this_machine(identity: str) -> bool:
    """Whether the process `identity` names ran on this machine, in this PID namespace."""
    here = process_identity()
    return here is not None and identity.split("/")[:2] == here.split("/")[:2]


def gone_from_here(identity: str) -> bool:
    """Whether the process `identity` names ran on this machine and no longer runs."""
    return on_this_machine(identity) and process_identity(pid_of(identity)) != identity


def free_slots_of_dead_runs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Free the pool slots of runs whose process is gone or that ended; what was done, said."""
    said = []
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return said
    for holder_id in sorted(storage.get_concurrency_run_ids() - {run_id}):
        record = instance.get_run_record_by_id(holder_id)
        if record is None:
            continue
        holder = record.dagster_run
        if holder.status in IN_PROGRESS:
            worker = worker_identity(instance, holder_id)
            if worker is None or not gone_from_here(worker):
                continue
            instance.report_engine_event(
                f"The run's process {pid_of(worker)} is gone (killed, e.g. with kill -9, or "
                f"crashed): run {run_id} found it still holding a pool slot. Its transaction "
                "never committed, so the warehouse is as it was; marked failed and its slot "
                "freed.",
                holder,
            )
            instance.report_run_failed(holder)
            storage.free_concurrency_slots_for_run(holder_id)
            said.append(
                f"Freed the pool slot held by run {holder_id}: its process {pid_of(worker)} on "
                "this machine is gone (killed or crashed), so it was marked failed; it landed "
                "nothing. Materialise its partition again if it was not retried."
            )
        elif holder.status in FINISHED_STATUSES and (
            record.end_time is not None and record.end_time + FINISHED_GRACE_SECONDS < time.time()
        ):
            storage.free_concurrency_slots_for_run(holder_id)
            said.append(
                f"Freed the pool slot still held by run {holder_id}, which ended "
                f"({holder.status.value}) without giving it back."
            )
    return said


def slots_taken(instance: dg.DagsterInstance, run_id: str, pools: set[str]) -> list[str]:
    """Which runs hold every slot of a pool this run's steps need, so the wait has a reason."""
    said = []
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return said
    for pool in sorted(pools):
        info = instance.event_log_storage.get_concurrency_info(pool)
        holders = sorted({slot.run_id for slot in info.claimed_slots} - {run_id})
        if info.slot_count and len(info.claimed_slots) >= info.slot_count and holders:
            said.append(
                f"Every slot of the pool {pool} ({info.slot_count}) is taken, by run(s) "
                f"{', '.join(holders)}: this run's steps wait until they end. If one of them "
                "is dead on another machine, see docs/troubleshooting.md, 'Runs wait and wait'."
            )
    return said


def worker_identity(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The identity of the process that runs `run_id`, as it logged it."""
    return logged_worker(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT))


def logged_worker(entries: Sequence[dg.EventLogEntry]) -> str | None:
    """The latest worker identity among a run's engine events (a run resumed by run
    monitoring logs its new worker too)."""
    for entry in reversed(entries):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        worker = data.metadata.get(WORKER_KEY) if data else None
        if worker is not None:
            return str(worker.value)
    return None


def freeze_start_up_heap() -> None:
    """Keep the objects a run's process holds before its steps out of every later collection.

    A run's process imports Dagster, dlt and the definitions (about 290,000 objects) and keeps
    them until it exits, yet each full collection during the steps walked them all again:
    0.14-0.17 s of every run, where a landing's own work can take less. Frozen, a full
    collection walks what the steps made (0.02 s). A run's process runs one run, so what is
    frozen was going to live to the end anyway.
    """
    gc.freeze()


class GuardedInProcessExecutor(InProcessExecutor):
    """Dagster's in-process executor; each run first freezes its start-up heap, names its
    process and frees dead slots."""

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        freeze_start_up_heap()
        identity = process_identity()
        if identity is not None:
            # Stored before any step claims a slot: the events yielded here are written first.
            yield DagsterEvent.engine_event(
                plan_context,
                f"Run worker: process {os.getpid()} on this machine",
                EngineEventData({WORKER_KEY: dg.MetadataValue.text(identity)}),
            )
        pools = {step.pool for step in execution_plan.get_steps_to_execute_in_topo_order()}
        said = free_slots_of_dead_runs(plan_context.instance, plan_context.run_id)
        said += slots_taken(plan_context.instance, plan_context.run_id, pools - {None})
        for message in said:
            yield DagsterEvent.engine_event(plan_context, message, EngineEventData())
        yield from super().execute(plan_context, execution_plan)


class _SleepingConcurrencyContext(InstanceConcurrencyContext):
    def interval_to_next_pending_claim_check(self) -> float:
        # Dagster returns min(0, …): never a wait. The wait is the soonest re-check, or none.
        now = time.time()
        waits = [ready_at - now for ready_at in self._pending_timeouts.values()]
        return max(0.0, min(waits)) if self.has_pending_claims() and waits else 0.0


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def guarded_in_process_executor(init_context: dg.InitExecutorContext) -> InProcessExecutor:
    """Runs every step in the run's process; first gives back slots that dead runs hold."""
    # The one place Dagster's in-process executor builds a run's concurrency context
    # (test_slot_guard.py measures a waiting run's CPU time through it).
    in_process.InstanceConcurrencyContext = _SleepingConcurrencyContext
    plain = _core_in_process_executor_creation(init_context.executor_config)
    return GuardedInProcessExecutor(
        retries=plain.retries,
        step_dependency_config=plain.step_dependency_config,
        marker_to_close=plain.marker_to_close,
    )
