"""Size-cut Kinesis partitions on moto's server: exact cuts across shards, exact landings."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    event_ids,
    manifest_rows,
    preview_tick,
    put_events,
    tick,
)
from ingestion_platform_tests.sources import materialize, start_only_run

pytestmark = pytest.mark.usefixtures("aws_env")


def test_sensor_cuts_exactly_n_records_across_four_shards_and_lands_them_once(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put_events(kinesis, stream, 1, 250)
    defs = declare(tmp_path, moto_endpoint, stream)

    # Two full batches at once: behind, so one partition holds both (core/backlog.py).
    first = tick(defs, instance, warehouse_path)
    keys = [request.partition_key for request in first.run_requests]
    assert len(keys) == 1
    assert keys[0].startswith("000001-")
    rows = manifest_rows(warehouse)
    assert {row[1] for row in rows} == {f"shardId-00000000000{n}" for n in range(4)}
    assert [sum(r[4] for r in rows if r[0] == key) for key in keys] == [200]

    # 50 pending: below the threshold, nothing is cut.
    second = tick(defs, instance, warehouse_path, first.cursor)
    assert second.run_requests == []
    assert "less than 100 records pending: 50 of 100 across 4 shard(s)" in (
        second.skip_reason.skip_message if second.skip_reason else ""
    )

    for key in keys:
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    landed = event_ids(warehouse)
    assert len(landed) == 200 and len(set(landed)) == 200
    assert [len(event_ids(warehouse, key)) for key in keys] == [200]
    (duplicates,) = warehouse.query(
        "select count(*) from (select _shard_id, _sequence_number from clicks.events "
        "group by all having count(*) > 1)"
    )[0:1]
    assert duplicates == (0,)


def test_records_wait_while_a_run_of_the_stream_waits_then_land_in_one_partition(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put_events(kinesis, stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    first = tick(defs, instance, warehouse_path, status=dg.DagsterRunStatus.NOT_STARTED)
    assert len(first.run_requests) == 1
    stream_tag = first.run_requests[0].tags["ingestion_platform/stream"]

    put_events(kinesis, stream, 101, 250)
    held = tick(defs, instance, warehouse_path, first.cursor)
    assert held.run_requests == []
    assert held.skip_reason is not None
    assert held.skip_reason.skip_message == (
        f"{stream_tag}: holding new cuts while 1 run(s) of it wait to start; what is pending "
        "then lands in one run"
    )
    start_only_run(instance)

    after = tick(defs, instance, warehouse_path, held.cursor)
    (key,) = [request.partition_key for request in after.run_requests]
    assert sum(row[4] for row in manifest_rows(warehouse) if row[0] == key) == 200


def test_replaying_a_partition_gives_identical_rows(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put_events(kinesis, stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]

    def snapshot() -> list[tuple]:
        return warehouse.query(
            "select * exclude (_loaded_at) from clicks.events order by _shard_id, _sequence_number"
        )

    materialize(defs, partition_key=key, resources=resources, instance=instance)
    before = snapshot()
    put_events(kinesis, stream, 101, 70)  # more records arrive; the slice does not change
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert snapshot() == before
    assert len(before) == 100


def test_a_restarted_sensor_neither_recuts_nor_skips(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put_events(kinesis, stream, 1, 130)
    defs = declare(tmp_path, moto_endpoint, stream)
    first = tick(defs, instance, warehouse_path)
    assert len(first.run_requests) == 1

    # A new daemon: no cursor, a freshly built sensor. Positions come from the manifest.
    defs = declare(tmp_path, moto_endpoint, stream)
    again = tick(defs, instance, warehouse_path, cursor=None)
    assert again.run_requests == []
    put_events(kinesis, stream, 131, 70)
    later = tick(defs, instance, warehouse_path, cursor=None)
    assert len(later.run_requests) == 1
    keys = instance.get_dynamic_partitions("clicks__events")
    assert len(keys) == 2
    for key in keys:
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 201))


def test_cuts_written_before_a_tick_died_are_requested_by_the_next_tick(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    # The tick writes its cut to the manifest, then the process dies before Dagster applies it.
    lost = preview_tick(defs, instance, warehouse_path)
    assert isinstance(lost, dg.SensorResult) and len(lost.run_requests) == 1
    assert instance.get_dynamic_partitions("clicks__events") == []

    recovered = tick(defs, instance, warehouse_path)
    assert [r.partition_key for r in recovered.run_requests] == [lost.run_requests[0].partition_key]


def test_a_sensor_evaluation_never_committed_offers_its_range_again_and_it_lands_once(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    # `dagster sensor preview`: the sensor is evaluated and its result thrown away.
    preview = preview_tick(defs, instance, warehouse_path)
    assert isinstance(preview, dg.SensorResult)
    (key,) = [r.partition_key for r in preview.run_requests]
    cut = manifest_rows(warehouse)
    # The next tick offers the same range again.
    again = tick(defs, instance, warehouse_path)
    assert [(r.partition_key, r.run_key) for r in again.run_requests] == [
        (key, f"clicks__events:{key}")
    ]
    # Now a run exists for it (queued): not offered a third time.
    assert tick(defs, instance, warehouse_path).run_requests == []
    assert manifest_rows(warehouse) == cut
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 101))
    assert tick(defs, instance, warehouse_path).run_requests == []


def test_a_partition_added_by_a_tick_that_died_before_its_run_is_offered_again(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    died = preview_tick(defs, instance, warehouse_path)
    assert isinstance(died, dg.SensorResult)
    # The daemon added the partition, then died before it reserved the run.
    (request,) = died.dynamic_partitions_requests or []
    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    (key,) = request.partition_keys
    assert [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests] == [key]
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 101))
    assert tick(defs, instance, warehouse_path).run_requests == []


def test_max_wait_cuts_what_is_pending_once_the_oldest_record_waited_long_enough(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 30)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 100, "max_wait": "2s"})
    first = tick(defs, instance, warehouse_path)
    if first.run_requests:  # the put took over 2 s: the wait was already over
        pytest.fail("the producer was slower than max_wait; raise max_wait in this test")
    assert "max_wait cuts at" in (first.skip_reason.skip_message if first.skip_reason else "")
    import time

    time.sleep(2.1)
    late = tick(defs, instance, warehouse_path, first.cursor)
    assert len(late.run_requests) == 1
    assert sum(row[4] for row in manifest_rows(warehouse)) == 30


def test_a_tick_skips_instead_of_waiting_behind_a_long_load(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingestion_platform.sources.kinesis import manifest as kinesis_manifest

    monkeypatch.setattr(kinesis_manifest, "SENSOR_LOCK_TIMEOUT_SECONDS", 0.2)
    put_events(client(moto_endpoint), stream, 1, 100)
    defs = declare(tmp_path, moto_endpoint, stream)
    with warehouse.exclusive():  # a run is landing
        busy = tick(defs, instance, warehouse_path)
    assert busy.run_requests == []
    assert busy.skip_reason is not None
    assert busy.skip_reason.skip_message == "the warehouse is busy (lock held > 0.2s)"
    assert len(tick(defs, instance, warehouse_path).run_requests) == 1
