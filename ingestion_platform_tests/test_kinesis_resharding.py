"""Resharding mid-stream on kinesis-mock: a split and a merge, every record landed once,
parents before children."""

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.warehouse import Warehouse
from ingestion_platform_tests.kinesis_emulators import (
    client,
    create_stream,
    declare,
    event_ids,
    put_events,
    tick,
)
from ingestion_platform_tests.sources import materialize

pytestmark = pytest.mark.usefixtures("aws_env")


def _wait_active(kinesis: object, stream: str) -> None:
    for _ in range(100):
        summary = kinesis.describe_stream_summary(StreamName=stream)  # type: ignore[attr-defined]
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    pytest.fail(f"stream {stream} did not become ACTIVE")


def _drain(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    resources: dict,
    expected: int,
    warehouse: Warehouse,
) -> None:
    """Tick and land until every expected record has landed (a few ticks at most)."""
    for _ in range(8):
        for request in tick(defs, instance, warehouse_path).run_requests:
            materialize(
                defs, partition_key=request.partition_key, resources=resources, instance=instance
            )
        if warehouse.count("clicks", "events") >= expected:
            return
    pytest.fail(f"only {warehouse.count('clicks', 'events')} of {expected} records landed")


def test_a_split_and_a_merge_land_every_record_once_parents_before_children(
    kinesis_mock_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(kinesis_mock_endpoint)
    stream = f"clicks-{uuid.uuid4().hex[:8]}"
    create_stream(kinesis, stream, 2)
    defs = declare(tmp_path, kinesis_mock_endpoint, stream, batch={"records": 40, "max_wait": "0s"})
    put_events(kinesis, stream, 1, 100)
    _drain(defs, instance, warehouse_path, resources, 100, warehouse)

    # Split shard 0 at the middle of its hash range; records go on arriving.
    shard0 = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low = int(shard0["HashKeyRange"]["StartingHashKey"])
    high = int(shard0["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=stream,
        ShardToSplit=shard0["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    _wait_active(kinesis, stream)
    put_events(kinesis, stream, 101, 100)
    _drain(defs, instance, warehouse_path, resources, 200, warehouse)

    # Merge the two children back into one.
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    children = [s for s in shards if s.get("ParentShardId") == shard0["ShardId"]]
    assert len(children) == 2
    children.sort(key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    kinesis.merge_shards(
        StreamName=stream,
        ShardToMerge=children[0]["ShardId"],
        AdjacentShardToMerge=children[1]["ShardId"],
    )
    _wait_active(kinesis, stream)
    put_events(kinesis, stream, 201, 100)
    _drain(defs, instance, warehouse_path, resources, 300, warehouse)

    assert event_ids(warehouse) == list(range(1, 301))
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    landed = dict(
        warehouse.query("select _shard_id, count(*) from clicks.events group by all order by all")
    )
    assert len(shards) == 5 and all(landed.get(s["ShardId"], 0) > 0 for s in shards[2:])
    # Every child's first row landed after the last row of each of its parents.
    times = {
        shard: (first, last)
        for shard, first, last in warehouse.query(
            "select _shard_id, min(_loaded_at), max(_loaded_at) from clicks.events group by all"
        )
    }
    for shard in shards:
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent and parent in times and shard["ShardId"] in times:
                assert times[parent][1] < times[shard["ShardId"]][0], (parent, shard["ShardId"])
    # Closed shards landed to their end are retired: the sensor reads none of them again.
    retired = warehouse.query(
        "select shard_id from clicks._partitions where partition_key = '' and shard_id <> '*' "
        "order by shard_id"
    )
    assert [shard for (shard,) in retired] == [
        shard0["ShardId"],
        children[0]["ShardId"],
        children[1]["ShardId"],
    ]
