"""The production profile in deploy/: its instance loads as configured, on a real PostgreSQL,
with runs launched as Docker containers, and it stays in step with the project's own
dagster.yaml and with the compose file that runs it.

Only the instance is loaded: no Docker engine runs here, and DockerRunLauncher reaches for
one only when it launches a run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_docker import DockerRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from ingestion_platform.sources.files.manifest import ManifestEntry, ManifestStore

PROJECT = Path(__file__).resolve().parents[1]
DEPLOY = PROJECT / "deploy"


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def home(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, its database a fresh one."""
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", folder / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", _psycopg2(postgres_url))
    return folder


def _psycopg2(url: str) -> str:
    """The URL as deploy/ writes it: dagster-postgres's SQL needs the psycopg2 driver."""
    return sa.make_url(url).set(drivername="postgresql+psycopg2").render_as_string(False)


@pytest.fixture
def production_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_the_production_instance_loads_on_postgres_with_the_docker_run_launcher(
    production_instance: dg.DagsterInstance, home: Path, postgres_url: str
) -> None:
    instance = production_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

    launcher = instance.run_launcher
    assert isinstance(launcher, DockerRunLauncher)
    assert launcher.networks == ["ingestion"]
    assert launcher.env_vars == [
        "DAGSTER_PG_URL",
        "INGESTION_WAREHOUSE_PATH",
        "INGESTION_WAREHOUSE_DUCKLAKE_CATALOG",
        "INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH",
        "PGPASSWORD",
        "INGESTION_RATE_BUDGET_DIR",
        "RUNTIME__DLTHUB_TELEMETRY",
        "SHOP_DB_URL",
    ]
    assert launcher.container_kwargs == {
        "volumes": ["ingestion_warehouse:/data"],
        "auto_remove": True,
    }
    # No image in the instance: each run starts from its code location's image.
    assert launcher.image is None

    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    # What the daemon's queue applies: `concurrency:` over the coordinator's own defaults.
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert concurrency.run_queue_config.max_user_code_failure_retries == 3
    assert concurrency.run_queue_config.user_code_failure_retry_delay == 15
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity.value == "op"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 300
    assert instance.run_monitoring_max_resume_run_attempts == 0
    # Run monitoring can tell a dead container from a slow one, so its run fails (and is
    # retried) instead of holding its `duckdb_warehouse` slot.
    assert launcher.supports_check_run_worker_health

    # What the platform keeps in the instance reaches every process through PostgreSQL:
    # size-partition keys (the slices) and file manifests (key-value storage). A second
    # instance from the same file stands in for another machine.
    manifest = [ManifestEntry("orders_0412.csv", 1204, 1_790_000_000.5)]
    instance.add_dynamic_partitions("shop_events__order_events", ["..1000", "1000..2000"])
    ManifestStore(instance, "partner_files__orders").put("orders_0412.csv@3fa9c1d2e4", manifest)
    # Every run event is stored this way (and wakes other processes with a NOTIFY).
    instance.report_runless_asset_event(dg.AssetMaterialization(["shop", "orders"]))
    other = dg.DagsterInstance.from_config(str(home))
    assert other.get_latest_materialization_event(dg.AssetKey(["shop", "orders"])) is not None
    assert other.get_dynamic_partitions("shop_events__order_events") == ["..1000", "1000..2000"]
    stored = ManifestStore(other, "partner_files__orders").get("orders_0412.csv@3fa9c1d2e4")
    assert stored == manifest
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            keys = connection.execute(sa.text("select partition from dynamic_partitions"))
            assert sorted(keys.scalars()) == ["..1000", "1000..2000"]
    finally:
        engine.dispose()


def test_a_bare_postgresql_url_fails_to_store_events_as_troubleshooting_says(
    home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose server-side parameters NOTIFY
    # does not take; the instance loads, and the first event fails.
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    instance = dg.DagsterInstance.from_config(str(home))
    with pytest.raises(sa.exc.ProgrammingError, match=r'syntax error at or near "\$1"'):
        instance.report_runless_asset_event(dg.AssetMaterialization(["shop", "orders"]))


def test_the_pool_limit_of_the_warehouse_is_one_slot_on_postgres(
    production_instance: dg.DagsterInstance,
) -> None:
    # The pool is created with the default limit the first time a step asks for it.
    storage = production_instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("duckdb_warehouse")
    info = storage.get_concurrency_info("duckdb_warehouse")
    assert info.slot_count == 1
    assert info.active_slot_count == 0


def test_deploy_dagster_yaml_is_the_projects_with_its_own_storage_and_run_launcher() -> None:
    project = _yaml(PROJECT / "dagster.yaml")
    deploy = _yaml(DEPLOY / "dagster.yaml")
    own = {"storage", "run_launcher"}
    assert own <= set(deploy)
    assert set(deploy) - own == set(project) - own
    # The one tuned difference: pulling an image on a fresh host is slower than a fork.
    deploy_monitoring = {**deploy["run_monitoring"], "start_timeout_seconds": 180}
    assert deploy_monitoring == project["run_monitoring"]
    for section in set(project) - own - {"run_monitoring"}:
        assert deploy[section] == project[section], section


def test_the_processes_profile_is_the_projects_with_only_its_storage_changed() -> None:
    project = _yaml(PROJECT / "dagster.yaml")
    processes = _yaml(DEPLOY / "processes" / "dagster.yaml")
    assert processes.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert processes == project


def test_the_compose_file_gives_run_containers_what_the_instance_names() -> None:
    compose = _yaml(DEPLOY / "docker-compose.yaml")
    launcher = _yaml(DEPLOY / "dagster.yaml")["run_launcher"]["config"]
    services = compose["services"]
    # env_vars are passed by name from the daemon's own environment into each run container.
    assert set(launcher["env_vars"]) <= set(services["daemon"]["environment"])
    assert set(launcher["env_vars"]) <= set(services["code"]["environment"])
    assert compose["networks"]["ingestion"]["name"] == launcher["network"]
    (volume,) = launcher["container_kwargs"]["volumes"]
    name, mount = volume.split(":")
    assert compose["volumes"][name]["name"] == name
    # The code server's sensors and the runs open the same warehouse file and budget files.
    assert f"{name}:{mount}" in services["code"]["volumes"]
    environment = services["code"]["environment"]
    assert environment["INGESTION_WAREHOUSE_PATH"].startswith(mount + "/")
    assert environment["INGESTION_RATE_BUDGET_DIR"].startswith(mount + "/")
    assert services["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["code"]["image"]
    assert environment["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
    workspace = _yaml(DEPLOY / "workspace.yaml")
    (location,) = workspace["load_from"]
    assert location["grpc_server"]["host"] == "code"
    assert str(location["grpc_server"]["port"]) in services["code"]["command"]
