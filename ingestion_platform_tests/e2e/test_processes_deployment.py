"""Production on processes, without Docker: the three services of deploy/processes/ started
from their unit files' own command lines (as systemd or any supervisor would), on PostgreSQL
instance storage, serving a source the user declared; a run launched through the webserver
lands its day exactly, and the run lives in PostgreSQL."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform_tests.e2e.dagster_dev import PROJECT, DagsterDev, free_port
from ingestion_platform_tests.e2e.test_killed_run import LAUNCH, _runs, _wait
from ingestion_platform_tests.e2e.test_ui_end_to_end import postgres_storage

pytestmark = pytest.mark.e2e

DEPLOY = PROJECT / "deploy" / "processes"
SERVICES = ["dagster-code", "dagster-daemon", "dagster-webserver"]
DAY = "2026-11-02"


def _unit(service: str, key: str) -> list[str] | None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / f"{service}.service")
    line = unit["Service"].get(key)
    return shlex.split(line) if line else None


def _installed_at(folder: Path, code_port: int, web_port: int, argv: list[str]) -> list[str]:
    """A unit's command line with this test's install folder and ports."""
    text = shlex.join(argv).replace("/opt/ingestion_platform", str(PROJECT))
    text = text.replace("--port 4000", f"--port {code_port}")
    text = text.replace("--port 3000", f"--port {web_port}")
    text = text.replace("deploy/processes/workspace.yaml", str(folder / "workspace.yaml"))
    return shlex.split(text)


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str) -> Iterator[DagsterDev]:
    # The user's code location with one source declared, as a user starts: a copy of the
    # package whose defs/ holds the demo's `shop`, first on the path.
    app = tmp_path / "app"
    shutil.copytree(
        PROJECT / "ingestion_platform",
        app / "ingestion_platform",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(PROJECT / "pyproject.toml", app / "pyproject.toml")  # where dg finds defs/
    shutil.copytree(
        PROJECT / "ingestion_platform" / "demo" / "defs" / "shop",
        app / "ingestion_platform" / "defs" / "shop",
    )
    (tmp_path / "data" / "demo").mkdir(parents=True)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'demo' / 'shop.sqlite'}")
    shop.create_shop(engine, shop.ShopSeed(customers=20, orders=300, events=10, days=6))
    engine.dispose()

    code_port, web_port = free_port(), free_port()
    workspace = (DEPLOY / "workspace.yaml").read_text().replace("4000", str(code_port))
    (tmp_path / "workspace.yaml").write_text(workspace)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    storage_url = postgres_storage(postgres_url)["storage"]["postgres"]["postgres_url"]
    env = {
        **os.environ,
        "PYTHONPATH": str(app),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": storage_url,
        "INGESTION_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    dev = DagsterDev(tmp_path, port=web_port)
    log = dev.log_path.open("ab")
    dagster = str(PROJECT / ".venv" / "bin" / "dagster")
    subprocess.run([dagster, "instance", "migrate"], env=env, stdout=log, check=True)
    processes: list[subprocess.Popen[bytes]] = []
    for service in SERVICES:
        # As systemd does: ExecStartPre until it succeeds (Restart=, RestartSec=), then ExecStart.
        if before := _unit(service, "ExecStartPre"):
            command = _installed_at(tmp_path, code_port, web_port, before)
            _wait(f"{service}'s ExecStartPre to pass", _passes(command, env), 180, dev)
        start = _unit(service, "ExecStart")
        assert start is not None
        processes.append(
            subprocess.Popen(
                _installed_at(tmp_path, code_port, web_port, start),
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        _wait("the webserver to load the code server", _loaded(dev), 240, dev)
        yield dev
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _passes(command: list[str], env: dict[str, str]) -> Any:
    return lambda: subprocess.run(command, env=env, capture_output=True).returncode == 0


def _loaded(dev: DagsterDev) -> Any:
    def check() -> bool:
        try:
            return dev._location_loaded()
        except RuntimeError:
            raise
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    return check


def test_the_three_services_from_their_unit_files_land_a_declared_source_on_postgres(
    deployment: DagsterDev, postgres_url: str
) -> None:
    dev = deployment
    params = {
        "selector": {
            "repositoryLocationName": "ingestion_platform",
            "repositoryName": "__repository__",
            "jobName": "shop__job",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
    }
    launched = dev.graphql(LAUNCH, {"params": params})["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> str | None:
        (run,) = [r for r in _runs(dev) if r["runId"] == run_id]
        return run["status"] if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert _wait("the run to finish", finished, 240, dev) == "SUCCESS", dev.log_tail()
    engine = sa.create_engine(f"sqlite:///{dev.folder / 'data' / 'demo' / 'shop.sqlite'}")
    with engine.connect() as connection:
        expected = connection.execute(
            sa.text("select count(*) from orders where date(updated_at) = :day"), {"day": DAY}
        ).scalar_one()
    warehouse = Warehouse(dev.warehouse_path)
    assert warehouse.count("shop", "orders", batch=DAY) == expected > 0
    # The run lives in PostgreSQL, where every service of the deployment reads it.
    with sa.create_engine(postgres_url).connect() as connection:
        stored = connection.execute(
            sa.text("select count(*) from runs where run_id = :id"), {"id": run_id}
        ).scalar_one()
    assert stored == 1
