"""kill -9 of a file run during the transfer and during the warehouse commit, then a re-run.

The run is a separate Python process materialising against a Dagster instance on disk (the
partition's manifest lives there) and is killed with SIGKILL once real state shows where it
is: a partial staged file, or the warehouse lock held while the DuckDB file grows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import SftpFileSource
from ingestion_platform_tests.files_helpers import keys, rows, tick
from ingestion_platform_tests.sources import build_source, materialize, warehouse_lock_is_free
from ingestion_platform_tests.sshd import Sshd, ThrottledProxy

CHILD = """
import json, sys
from pathlib import Path
import dagster as dg
from ingestion_platform.sources.files.component import SftpFileSource
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform_tests.sources import build_source, materialize, warehouse_lock_is_free
folder, attributes, home, key, warehouse, hold_open = json.loads(sys.argv[1])
if hold_open:
    # The transaction stays open for a minute once the slice is inserted: a busy machine
    # may let the parent see the file grow only late, and a kill after the commit would
    # prove nothing. The kill still comes when the parent sees the file grow.
    import time
    from ingestion_platform.sources.files import landing
    inserted = landing.bad_rows
    def hold(*args, **kwargs):
        time.sleep(60)
        return inserted(*args, **kwargs)
    landing.bad_rows = hold
defs = build_source(SftpFileSource, Path(folder), attributes)
with dg.instance_for_test(temp_dir=home) as instance:
    materialize(defs, partition_key=key, instance=instance,
                resources={"warehouse": WarehouseResource(path=warehouse)})
"""


@pytest.fixture
def disk_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance on disk, so the killed process and the re-run share manifests."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def _big_csv(path: Path, count: int) -> None:
    with path.open("w") as out:
        out.write("id,pad\n")
        out.writelines(f"{i},{'x' * 30}\n" for i in range(1, count + 1))


def _land_first_file(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance, resources: dict, warehouse: Warehouse
) -> tuple[list[tuple], str]:
    (sshd.root / "a.csv").write_text("id,pad\n-1,a\n-2,b\n")
    defs = build_source(SftpFileSource, tmp_path / "partner", _attributes(sshd, sshd.port))
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    return _snapshot(warehouse), key


def _attributes(sshd: Sshd, port: int) -> dict[str, object]:
    return sshd.attributes(table="orders", settle="0s", patterns=["*.csv"], port=port)


def _snapshot(warehouse: Warehouse) -> list[tuple]:
    return rows(
        warehouse,
        "select id, pad, _file, _row, _batch_key, _loaded_at from partner.orders order by id",
    )


def _start_child(
    tmp_path: Path, sshd: Sshd, port: int, key: str, warehouse: Path, hold_open: bool = False
) -> subprocess.Popen:
    payload = [
        str(tmp_path / "partner"),
        _attributes(sshd, port),
        str(tmp_path / "dagster_home"),
        key,
        str(warehouse),
        hold_open,
    ]
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(payload)], env=env)


def _kill_when(child: subprocess.Popen, ready, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        if ready():
            child.kill()  # SIGKILL: no clean-up of any kind
            break
        time.sleep(0.005)
    child.wait()
    assert child.returncode == -9, "the run ended before it could be killed"


def _assert_exact_rerun(
    tmp_path: Path,
    sshd: Sshd,
    instance: dg.DagsterInstance,
    resources: dict,
    warehouse: Warehouse,
    before: list[tuple],
    key: str,
    count: int,
) -> dg.ExecuteInProcessResult:
    defs = build_source(SftpFileSource, tmp_path / "partner", _attributes(sshd, sshd.port))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(
        warehouse,
        "select count(*), count(distinct id), min(id), max(id), sum(id), min(_row), max(_row), "
        "count(distinct _row) from partner.orders where _batch_key = ?",
        key,
    ) == [(count, count, 1, count, count * (count + 1) // 2, 1, count, count)]
    assert rows(
        warehouse,
        "select count(*) from partner.orders where _batch_key = ? and pad <> ?",
        key,
        "x" * 30,
    ) == [(0,)]
    others = [r for r in _snapshot(warehouse) if r[4] != key]
    assert others == before  # the earlier slice is untouched, byte for byte
    assert rows(warehouse, "select count(*) from partner._quarantine") == [(0,)]
    return result


def test_kill_9_during_the_transfer_then_a_rerun_lands_the_slice_exactly(
    tmp_path: Path,
    sshd: Sshd,
    disk_instance: dg.DagsterInstance,
    resources: dict,
    warehouse: Warehouse,
    warehouse_path: Path,
) -> None:
    before, _ = _land_first_file(tmp_path, sshd, disk_instance, resources, warehouse)
    count = 300_000
    _big_csv(sshd.root / "big.csv", count)
    total = (sshd.root / "big.csv").stat().st_size
    defs = build_source(SftpFileSource, tmp_path / "partner", _attributes(sshd, sshd.port))
    (key,) = keys(tick(defs, disk_instance))
    proxy = ThrottledProxy(sshd.port, rate=2e6)  # 2 MB/s: the transfer takes seconds
    staging = warehouse_path.parent / ".staging" / "partner"

    def partial() -> list[Path]:
        return [p for p in staging.glob("*/*big.csv") if 0 < p.stat().st_size < total]

    try:
        child = _start_child(tmp_path, sshd, proxy.port, key, warehouse_path)
        _kill_when(child, lambda: bool(partial()))
    finally:
        proxy.close()
    (stale,) = partial()  # the killed run's partial file is still there
    assert warehouse_lock_is_free(warehouse)
    assert _snapshot(warehouse) == before  # nothing of the slice landed

    _assert_exact_rerun(tmp_path, sshd, disk_instance, resources, warehouse, before, key, count)
    assert not stale.parent.exists()  # the re-run removed the dead run's staging folder
    assert sorted(p.name for p in staging.iterdir()) == []


def test_kill_9_during_the_warehouse_commit_then_a_rerun_lands_the_slice_exactly(
    tmp_path: Path,
    sshd: Sshd,
    disk_instance: dg.DagsterInstance,
    resources: dict,
    warehouse: Warehouse,
    warehouse_path: Path,
) -> None:
    before, _ = _land_first_file(tmp_path, sshd, disk_instance, resources, warehouse)
    count = 1_500_000
    _big_csv(sshd.root / "big.csv", count)
    defs = build_source(SftpFileSource, tmp_path / "partner", _attributes(sshd, sshd.port))
    (key,) = keys(tick(defs, disk_instance))
    size_before = warehouse_path.stat().st_size

    def writing_uncommitted() -> bool:
        # The child holds the lock and DuckDB is writing the new rows' blocks into the file;
        # they only become part of the database when the commit's WAL record is written.
        return not warehouse_lock_is_free(warehouse) and warehouse_path.stat().st_size > size_before

    child = _start_child(tmp_path, sshd, sshd.port, key, warehouse_path, hold_open=True)
    _kill_when(child, writing_uncommitted)
    assert warehouse_lock_is_free(warehouse)  # the kernel released the dead process's lock
    assert _snapshot(warehouse) == before
    assert rows(warehouse, "select count(*) from partner._quarantine") == [(0,)]

    result = _assert_exact_rerun(
        tmp_path, sshd, disk_instance, resources, warehouse, before, key, count
    )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["rows_read"].value, metadata["rows_landed"].value) == (count, count)
    assert list((warehouse_path.parent / ".staging" / "partner").iterdir()) == []
