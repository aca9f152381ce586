"""The warehouse resource: settings read at run time, writers with bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion_platform.warehouse import WarehouseResource


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
