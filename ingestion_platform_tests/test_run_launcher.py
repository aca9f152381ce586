"""A run worker killed with -9 is reported dead to run monitoring, so its run fails, its
warehouse pool slot is freed and run retries start it again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.utils import make_new_run_id

from ingestion_platform.run_launcher import MonitoredRunLauncher
from ingestion_platform.slot_guard import WORKER_KEY, process_identity


@pytest.fixture
def monitored() -> Iterator[dg.DagsterInstance]:
    launcher = {"module": "ingestion_platform.run_launcher", "class": "MonitoredRunLauncher"}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def _started_run(instance: dg.DagsterInstance, pid: int | None) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name="shop__job", run_id=make_new_run_id()))
    if pid is not None:
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run


def test_the_project_instance_uses_the_monitored_launcher(monitored: dg.DagsterInstance) -> None:
    assert isinstance(monitored.run_launcher, MonitoredRunLauncher)
    assert monitored.run_launcher.supports_check_run_worker_health


def test_a_live_worker_is_running_and_a_killed_one_failed(monitored: dg.DagsterInstance) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = _started_run(monitored, worker.pid)
    assert monitored.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING

    worker.kill()  # SIGKILL; left unreaped, as a zombie, once the kernel has delivered it
    deadline = time.monotonic() + 10
    while (health := monitored.run_launcher.check_run_worker_health(run)).status != (
        WorkerStatus.FAILED
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health.status == WorkerStatus.FAILED
    assert health.msg == (
        f"the run worker process {worker.pid} is gone: it was killed (e.g. kill -9) or crashed "
        "before it could report why; its transaction never committed, so the warehouse is as "
        "it was, and run retries land the slice again"
    )
    worker.wait()
    assert monitored.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED


def test_a_run_that_has_not_announced_its_worker_is_unknown(
    monitored: dg.DagsterInstance,
) -> None:
    run = _started_run(monitored, pid=None)
    assert monitored.run_launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN


def test_a_cli_run_is_judged_by_the_process_it_named_on_this_machine_only(
    monitored: dg.DagsterInstance,
) -> None:
    """A run not launched here (`dagster asset materialize`) holds its pool slot too."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = process_identity(worker.pid)
    assert identity is not None
    cli_run, elsewhere = _started_run(monitored, None), _started_run(monitored, None)
    another_machine = f"another-boot/{identity.split('/', 1)[1]}"
    for run, named in ((cli_run, identity), (elsewhere, another_machine)):
        monitored.report_engine_event(
            "Run worker: process on some machine",
            run,
            EngineEventData({WORKER_KEY: dg.MetadataValue.text(named)}),
        )
    assert monitored.run_launcher.check_run_worker_health(cli_run).status == WorkerStatus.RUNNING
    worker.kill()
    worker.wait()
    health = monitored.run_launcher.check_run_worker_health(cli_run)
    assert health.status == WorkerStatus.FAILED
    assert health.msg.startswith(f"the run worker process {worker.pid} is gone: ")
    assert monitored.run_launcher.check_run_worker_health(elsewhere).status == WorkerStatus.UNKNOWN


def test_a_resumed_run_is_judged_by_its_latest_worker(monitored: dg.DagsterInstance) -> None:
    run = _started_run(monitored, None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for worker in (dead, live):
            monitored.report_engine_event(
                f"Run worker: process {worker.pid} on this machine",
                run,
                EngineEventData({WORKER_KEY: dg.MetadataValue.text(_identity_of(worker))}),
            )
        health = monitored.run_launcher.check_run_worker_health(run)
        assert (health.status, health.run_worker_id) == (WorkerStatus.RUNNING, str(live.pid))
    finally:
        live.kill()
        live.wait()


def _identity_of(worker: subprocess.Popen[bytes]) -> str:
    """A live worker's identity; a reaped one's as it was (a start time no process has)."""
    identity = process_identity(worker.pid)
    if identity is not None:
        return identity
    boot, namespace, _, started = process_identity().split("/")
    return f"{boot}/{namespace}/{worker.pid}/{int(started) + 1}"
