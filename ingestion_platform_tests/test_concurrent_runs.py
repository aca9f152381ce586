"""Several runs in separate processes write one warehouse at once without a DuckDB lock error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform.sources.sql.component import SqlDatabaseSource
from ingestion_platform_tests.sources import build_source

SEED = shop.ShopSeed(customers=40, orders=4000, events=10, days=6)

RUN_ONE = textwrap.dedent(
    """
    import sys, yaml, dagster as dg
    from pathlib import Path
    from ingestion_platform_tests.sources import build_source
    from ingestion_platform.sources.sql.component import SqlDatabaseSource
    from ingestion_platform.core.warehouse import WarehouseResource

    folder, warehouse, partition, range_end = Path(sys.argv[1]), *sys.argv[2:5]
    attributes = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    defs = build_source(SqlDatabaseSource, folder, attributes)
    tags = {}
    if range_end != "-":
        tags = {"dagster/asset_partition_range_start": partition,
                "dagster/asset_partition_range_end": range_end}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets), instance=instance, tags=tags,
            partition_key=None if tags else partition,
            resources={"warehouse": WarehouseResource(path=warehouse)},
        )
    sys.exit(0 if result.success else 1)
    """
)


def test_a_backfill_and_single_partitions_run_at_once_without_lock_errors(
    postgres_url: str, tmp_path: Path, warehouse_path: Path, warehouse: Warehouse
) -> None:
    shop.create_shop(sa.create_engine(postgres_url), SEED)
    folder = tmp_path / "shop"
    attributes = {
        "connection": postgres_url,
        "cursor": "updated_at",
        "tables": [{"name": "orders"}, {"name": "customers"}],
        "batch": {"every": "day", "start": "2026-11-01"},
        "chunk_size": 200,
    }
    build_source(SqlDatabaseSource, folder, attributes)
    runs = [("2026-11-01", "2026-11-03"), ("2026-11-04", "-"), ("2026-11-05", "-"),
            ("2026-11-06", "-")]  # fmt: skip
    # Added to, not replaced: the lake-contract run puts its DuckDB there (core/ducklake.py).
    paths = [os.environ.get("PYTHONPATH", ""), str(Path(__file__).parents[1])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_ONE, str(folder), str(warehouse_path), start, end],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for start, end in runs
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "Could not set lock on file" not in output
    assert warehouse.count("shop", "orders") == SEED.orders
    assert warehouse.count("shop", "customers") == SEED.customers
    keys = warehouse.query("select distinct _batch_key from shop.orders order by 1")
    assert [key for (key,) in keys] == [f"2026-11-0{day}" for day in range(1, 7)]
