"""Long work on a stream: a tick cuts what fits its time budget, a run logs its progress."""

import re
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    event_ids,
    manifest_rows,
    put_events,
    tick,
)
from ingestion_platform_tests.sources import materialize

pytestmark = pytest.mark.usefixtures("aws_env")


def test_a_tick_cuts_what_fits_its_budget_and_says_how_much_remains(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 1000)
    # A budget spent by the first reads: the tick cuts what it has read, and stops.
    defs = declare(tmp_path, moto_endpoint, stream, tick_budget_seconds=0.001)
    logged: list[str] = []
    first = tick(defs, instance, warehouse_path, log=logged)
    assert 0 < len(first.run_requests) < 10
    (said,) = [message for message in logged if "tick budget" in message]
    assert re.fullmatch(
        rf"tick budget of 0.001s spent after cutting {len(first.run_requests)} partition\(s\): "
        r"\d+ records read and not cut yet, and [1-4] shard\(s\) not read to their tip; the "
        r"next tick goes on from there",
        said,
    ), said
    keys = [r.partition_key for r in first.run_requests]
    for _ in range(10):
        more = tick(defs, instance, warehouse_path)
        keys += [r.partition_key for r in more.run_requests]
        if not more.run_requests:
            break
    assert [r[4] for r in manifest_rows(warehouse)].count(0) == 0
    for key in keys:
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 1001))
    # Whole batches of 100, several to a partition where a tick found them at once.
    sizes = [len(event_ids(warehouse, key)) for key in keys]
    assert sum(sizes) == 1000 and all(size % 100 == 0 for size in sizes), sizes


def test_a_run_logs_its_progress_per_shard_while_it_reads(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 400)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 400})
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    # Every page logged (interval 0), as a long read logs every few seconds.
    defs = declare(
        tmp_path, moto_endpoint, stream, batch={"records": 400}, progress_interval_seconds=0
    )
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    progress = [m for m in logged if m.startswith("clicks.events: read ") and "so far" in m]
    assert len(progress) == 4, logged  # one page per shard
    pattern = (
        r"clicks\.events: read (\d+) of 400 records so far \((shardId-\d+: \d+(, )?)+\)"
        r" in \d+\.\ds"
    )
    counts = [int(re.fullmatch(pattern, m).group(1)) for m in progress]  # type: ignore[union-attr]
    assert counts == sorted(counts) and counts[-1] == 400
    assert re.search(r"\(shardId-000000000000: \d+, shardId-000000000001: \d+, ", progress[-1])
    (landing,) = [m for m in logged if m.startswith("clicks.events: landing ")]
    assert re.fullmatch(r"clicks\.events: landing 400 records \([\d,]+ bytes\)", landing)
    assert event_ids(warehouse) == list(range(1, 401))
