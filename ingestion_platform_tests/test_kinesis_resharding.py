"""Resharding mid-stream: a split and a merge, every record landed once, parents before
children; closed shards read to their end whichever way the peer says where the end is."""

from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.kinesis.connectors.kinesis import (
    KinesisReader,
    StreamAddress,
    make_client,
)
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    drain,
    event_ids,
    merge,
    new_stream,
    put_events,
    split,
    tick,
)
from ingestion_platform_tests.kinesis_proxies import EmptyPagesProxy

pytestmark = pytest.mark.usefixtures("aws_env")


def _split_merge_and_land(
    kinesis: object,
    endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    instance: dg.DagsterInstance,
) -> tuple[str, list[str]]:
    """Land 100 records, split shard 0, land 100 more, merge its children, land 100 more."""
    stream = new_stream(kinesis, 2)
    defs = declare(tmp_path, endpoint, stream, batch={"records": 40, "max_wait": "0s"})
    put_events(kinesis, stream, 1, 100)
    drain(defs, instance, warehouse_path, 100)
    parent, children = split(kinesis, stream)
    put_events(kinesis, stream, 101, 100)
    drain(defs, instance, warehouse_path, 200)
    merge(kinesis, stream, *children)
    put_events(kinesis, stream, 201, 100)
    drain(defs, instance, warehouse_path, 300)
    return parent, children


def test_a_split_and_a_merge_land_every_record_once_parents_before_children(
    kinesis_mock_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(kinesis_mock_endpoint)
    parent, children = _split_merge_and_land(
        kinesis, kinesis_mock_endpoint, tmp_path, warehouse_path, instance
    )
    assert event_ids(warehouse) == list(range(1, 301))
    landed = dict(
        warehouse.query("select _shard_id, count(*) from clicks.events group by all order by all")
    )
    assert all(landed.get(shard, 0) > 0 for shard in children)
    assert len(landed) == 5
    # Every child's first row landed after the last row of each of its parents.
    times = {
        shard: (first, last)
        for shard, first, last in warehouse.query(
            "select _shard_id, min(_loaded_at), max(_loaded_at) from clicks.events group by all"
        )
    }
    for child in children:
        assert times[parent][1] < times[child][0], (parent, child)
    (merged,) = [shard for shard in times if shard not in (parent, *children)][-1:]
    for child in children:
        assert times[child][1] < times[merged][0], (child, merged)
    # Closed shards landed to their end are retired: the sensor reads none of them again.
    retired = warehouse.query(
        "select shard_id from clicks._partitions where partition_key = '' and shard_id not in "
        "('*', '@stream') order by shard_id"
    )
    assert [shard for (shard,) in retired] == [parent, *children]


def test_closed_shards_answering_empty_pages_before_their_end_are_finished(
    kinesis_mock_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    # Another Kinesis implementation: a closed shard's reads start with empty pages that
    # carry a NextShardIterator; only a null NextShardIterator says the shard is done.
    kinesis = client(kinesis_mock_endpoint)
    with EmptyPagesProxy(kinesis_mock_endpoint, empty_pages=3) as proxy:
        parent, children = _split_merge_and_land(
            kinesis, proxy.endpoint, tmp_path, warehouse_path, instance
        )
        assert proxy.served > 0
    assert event_ids(warehouse) == list(range(1, 301))
    (duplicates,) = warehouse.query(
        "select count(*) - count(distinct (_shard_id, _sequence_number)) from clicks.events"
    )[0]
    assert duplicates == 0
    landed = {shard for (shard,) in warehouse.query("select distinct _shard_id from clicks.events")}
    assert set(children) <= landed


def test_a_closed_shard_ends_at_its_ending_sequence_number_when_the_peer_never_says_so(
    moto_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    # moto answers past a closed shard's last record with empty pages and a
    # NextShardIterator forever; ListShards' EndingSequenceNumber (its last record's) is the
    # only sign of the end. (moto's split puts no record in the children: none is put after.)
    kinesis = client(moto_endpoint)
    stream = new_stream(kinesis, 1)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 40, "max_wait": "0s"})
    put_events(kinesis, stream, 1, 50)
    drain(defs, instance, warehouse_path, 50)
    parent, _ = split(kinesis, stream)
    tick(defs, instance, warehouse_path)
    retired = warehouse.query(
        "select shard_id from clicks._partitions where partition_key = '' and shard_ended"
    )
    assert retired == [(parent,)]
    assert event_ids(warehouse) == list(range(1, 51))
    address = StreamAddress(stream, "us-east-1", moto_endpoint)
    reader = KinesisReader(make_client(address), address)
    (closed,) = [shard for shard in reader.shards() if shard.closed]
    read = reader.read(closed)
    assert read.reached_end and len(read.records) == 50
    # Read from its last record on, it is at its end without a call.
    after_end = reader.read(closed, after=read.records[-1].sequence)
    assert after_end.reached_end and after_end.records == [] and after_end.calls == 0
