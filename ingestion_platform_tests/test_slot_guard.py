"""A CLI run killed with -9 no longer keeps the `duckdb_warehouse` slot from the next run.

Before the guard, the next `dagster asset materialize` waited for ever ("Step blocked by limit
for pool duckdb_warehouse", one core spinning) unless someone freed the slot by hand. Each
test runs the real CLI on a project `dagster.yaml` instance (SQLite storage, pool limit 1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.slot_guard import gone_from_here, process_identity

PROJECT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"

# One asset in the warehouse pool that takes `HOLD_SECONDS` to land, in a code location
# built like the project's (platform_definitions: the warehouse resource and the executor).
DEFS = '''
import gc
import os
import time

import dagster as dg

from ingestion_platform.definitions import platform_definitions


@dg.asset(pool="duckdb_warehouse")
def held() -> None:
    """Holds the warehouse pool's slot for HOLD_SECONDS."""
    time.sleep(float(os.environ["HOLD_SECONDS"]))


@dg.asset
def heap() -> dg.MaterializeResult:
    """Reports how many objects the run's process had frozen when its step ran."""
    return dg.MaterializeResult(metadata={"frozen": gc.get_freeze_count()})


defs = platform_definitions(dg.Definitions(assets=[held, heap]))
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    (tmp_path / "held_defs.py").write_text(DEFS)
    return tmp_path


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The CLIs a test starts; none (nor anything it started) outlives the test."""
    clis: list[subprocess.Popen[bytes]] = []
    yield clis
    for cli in clis:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()


def _materialize(
    project: Path,
    hold: float,
    log: Path,
    started: list[subprocess.Popen[bytes]],
    asset: str = "held",
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DAGSTER_HOME": str(project / "home"), "HOLD_SECONDS": str(hold)}
    cli = subprocess.Popen(
        [str(DAGSTER), "asset", "materialize", "-f", str(project / "held_defs.py"),
         "--select", asset],
        cwd=project, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    started.append(cli)
    return cli


def _holding(
    project: Path, hold: float, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """A CLI run whose step holds the pool's slot (for `hold` seconds from now)."""
    log = project / "first.log"
    cli = _materialize(project, hold, log, started)
    deadline = time.monotonic() + 120
    while 'Started execution of step "held"' not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)
    return cli


def _runs(project: Path) -> list[tuple[dg.DagsterRun, list[str]]]:
    """Each run, oldest first, with the messages of its log."""
    os.environ["DAGSTER_HOME"] = str(project / "home")
    try:
        with dg.DagsterInstance.get() as instance:
            return [
                (run, [entry.message for entry in instance.all_logs(run.run_id)])
                for run in reversed(instance.get_runs())
            ]
    finally:
        del os.environ["DAGSTER_HOME"]


def test_a_killed_cli_run_is_failed_and_its_slot_freed_by_the_next_run(
    project: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    first = _holding(project, 600, started)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    second_log = project / "second.log"
    second = _materialize(project, 0, second_log, started)
    # Before the guard this waited for ever; 90 s is a CLI start on a loaded machine.
    assert second.wait(timeout=90) == 0, second_log.read_text()
    (killed, killed_messages), (after, _) = _runs(project)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert after.status == dg.DagsterRunStatus.SUCCESS
    (pid,) = (m.split()[3] for m in killed_messages if m.startswith("Run worker: process "))
    assert (
        f"The run's process {pid} is gone (killed, e.g. with kill -9, or crashed): run "
        f"{after.run_id} found it still holding a pool slot. Its transaction never committed, "
        "so the warehouse is as it was; marked failed and its slot freed."
    ) in killed_messages
    assert (
        f"Freed the pool slot held by run {killed.run_id}: its process {pid} on this machine "
        "is gone (killed or crashed), so it was marked failed; it landed nothing. Materialise "
        "its partition again if it was not retried."
    ) in second_log.read_text()
    assert "Step blocked by limit for pool" not in second_log.read_text()
    assert "Every slot of the pool" not in second_log.read_text()


def test_a_live_run_keeps_its_slot_and_the_next_run_waits_for_it_idle(
    project: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    first = _holding(project, 15, started)
    second_log = project / "second.log"
    second = _materialize(project, 0, second_log, started)
    began = time.monotonic()
    assert first.wait(timeout=120) == 0
    # While it waited, Dagster's step loop spun a core (CPU time ~ wall time); now it sleeps
    # between its re-checks, so its CPU time is about its start-up's.
    waited = time.monotonic() - began
    cpu = _cpu_seconds(second.pid)
    print(f"the waiting run used {cpu:.1f} s of CPU in {waited:.1f} s")
    assert cpu < waited / 2, (cpu, waited)
    assert second.wait(timeout=120) == 0, second_log.read_text()
    (holder, _), (waiter, _) = _runs(project)
    assert holder.status == waiter.status == dg.DagsterRunStatus.SUCCESS
    text = second_log.read_text()
    assert (
        f"Every slot of the pool duckdb_warehouse (1) is taken, by run(s) {holder.run_id}: "
        "this run's steps wait until they end. If one of them is dead on another machine, "
        "see docs/troubleshooting.md, 'Runs wait and wait'."
    ) in text
    assert "Step blocked by limit for pool duckdb_warehouse" in text
    assert "Freed the pool slot" not in text


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_process_is_known_alive_until_killed_even_as_a_zombie() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = process_identity(child.pid)
    assert identity is not None
    assert not gone_from_here(identity)
    child.kill()  # unreaped: a zombie until wait()
    deadline = time.monotonic() + 10
    while not gone_from_here(identity):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.wait()
    assert gone_from_here(identity)
    # The same pid started at another time is another process (pids are reused).
    boot, namespace, _, started = process_identity().split("/")
    assert gone_from_here(f"{boot}/{namespace}/{os.getpid()}/{int(started) + 1}")
    # Another machine's or container's process is never judged from here.
    assert not gone_from_here(f"another-boot/{namespace}/{child.pid}/{started}")
    assert not gone_from_here(f"{boot}/pid:[1]/{child.pid}/{started}")


def test_a_run_freezes_the_heap_its_process_started_with(
    project: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Full collections during the steps no longer walk Dagster's and dlt's own objects."""
    log = project / "heap.log"
    assert _materialize(project, 0, log, started, asset="heap").wait(timeout=120) == 0, (
        log.read_text(errors="replace")
    )
    os.environ["DAGSTER_HOME"] = str(project / "home")
    try:
        with dg.DagsterInstance.get() as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey("heap"))
    finally:
        del os.environ["DAGSTER_HOME"]
    assert event is not None and event.asset_materialization is not None
    frozen = event.asset_materialization.metadata["frozen"].value
    # Dagster alone leaves over 100,000 objects behind its import; none were frozen before.
    assert isinstance(frozen, int) and frozen > 100_000, frozen
