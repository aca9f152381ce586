"""The warehouse resource: settings read at run time, writers with bounded memory, a lake."""

from __future__ import annotations

from pathlib import Path

import pytest

import ingestion_platform
from ingestion_platform.core.ducklake import CATALOG_ENV, DATA_PATH_ENV, LakeConfigError
from ingestion_platform.core.warehouse import WarehouseResource


def _writer_settings(resource: WarehouseResource) -> tuple[str, bool]:
    warehouse = resource.get()
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            row = connection.execute(
                "select current_setting('memory_limit'), "
                "current_setting('preserve_insertion_order')"
            ).fetchone()
        finally:
            connection.close()
    assert row is not None
    return row[0], row[1]


def test_writers_cap_duckdb_memory_at_256mb_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INGESTION_WAREHOUSE_MEMORY_LIMIT", raising=False)
    resource = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    assert _writer_settings(resource) == ("244.1 MiB", False)  # 256 MB in MiB


def test_memory_limit_and_path_come_from_the_environment_when_a_run_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = WarehouseResource()
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(tmp_path / "from_env.duckdb"))
    monkeypatch.setenv("INGESTION_WAREHOUSE_MEMORY_LIMIT", "1GB")
    assert resource.get().path == tmp_path / "from_env.duckdb"
    assert _writer_settings(resource) == ("953.6 MiB", False)  # 1 GB in MiB


def test_a_lake_without_a_data_path_fails_naming_the_variable_when_a_run_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CATALOG_ENV, "postgresql://ingest@127.0.0.1:5432/lake")
    monkeypatch.delenv(DATA_PATH_ENV, raising=False)
    resource = WarehouseResource()  # nothing is read before a run asks
    with pytest.raises(LakeConfigError) as raised:
        resource.get()
    assert str(raised.value) == (
        "INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH is not set, and a DuckLake needs a place for "
        "its Parquet files. Fix: export INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH=s3://BUCKET/"
        "PREFIX/ (or a folder every run host mounts)"
    )


@pytest.mark.parametrize(
    ("catalog", "problem"),
    [
        ("sqlite:///lake.sqlite", "the catalog must be a PostgreSQL database, got a 'sqlite' URL"),
        ("lake on db-host", "is not a database URL"),
    ],
)
def test_a_lake_catalog_must_be_a_postgresql_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: str, problem: str
) -> None:
    resource = WarehouseResource(ducklake_catalog=catalog, ducklake_data_path=str(tmp_path))
    with pytest.raises(LakeConfigError) as raised:
        resource.get()
    assert str(raised.value).startswith(f"{CATALOG_ENV}")
    assert problem in str(raised.value)
    assert str(raised.value).endswith(
        "Fix: set it to postgresql://USER@HOST:5432/DATABASE (the password in PGPASSWORD)"
    )


def test_no_module_leaves_a_partial_result_on_a_connection() -> None:
    """DuckDB 2.0 refuses `register` after a partial fetch; single rows go through fetch_row."""
    package = Path(ingestion_platform.__file__).parent
    partial = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if ".fetchone()" in line or ".fetchmany(" in line
    ]
    assert partial == []
