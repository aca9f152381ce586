"""Landing Kinesis partitions: bad records, retention, kill -9, throttling, expired iterators."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.kinesis_producer import put
from ingestion_platform.sources.kinesis.connectors.kinesis import (
    Backoff,
    KinesisReader,
    StreamAddress,
    make_client,
)
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    event_ids,
    new_stream,
    put_events,
    put_json,
    tick,
)
from ingestion_platform_tests.kinesis_proxies import FaultProxy
from ingestion_platform_tests.sources import failure_message, materialize, warehouse_lock_is_free

pytestmark = pytest.mark.usefixtures("aws_env")


def test_bad_records_are_quarantined_and_the_counts_reconcile(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    good = [{"event_id": n, "amount": n * 10} for n in range(1, 8)]
    entries = [{"Data": json.dumps(v).encode(), "PartitionKey": "a"} for v in good]
    entries += [
        {"Data": b'{"event_id": 8, "amount": ', "PartitionKey": "a"},
        {"Data": b"[9]", "PartitionKey": "a"},
        {"Data": b'{"event_id": 10, "note": "\xff"}', "PartitionKey": "a"},
        {"Data": json.dumps({"event_id": 11, "pad": "x" * 300}).encode(), "PartitionKey": "a"},
    ]
    put(kinesis, stream, entries)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 11}, max_record_bytes=200)
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert event_ids(warehouse) == list(range(1, 8))
    quarantined = warehouse.query(
        "select reason, raw_value, file like 'shardId-%:%', _batch_key from clicks._quarantine "
        "order by raw_value"
    )
    assert [(reason, ok, batch) for reason, _, ok, batch in quarantined] == [
        ("not a JSON object: a JSON list", True, key),
        ("not UTF-8 text: invalid start byte at byte 26", True, key),
        ("record of 327 bytes is over max_record_bytes (200)", True, key),
        ("invalid JSON: Expecting value at line 1 column 27", True, key),
    ]
    assert quarantined[1][1] == '{"event_id": 10, "note": "\\xff"}'  # raw bytes, escaped
    metadata = result.asset_materializations_for_node("clicks__events")[0].metadata
    assert metadata["records_read"].value == 11
    assert metadata["rows_landed"].value == 7
    assert metadata["rows_quarantined"].value == 4
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_landed"].value == 7
    assert checks["schema_drift"].passed  # the table's first landing
    assert not checks["unplaced_rows"].passed  # 4 of 11 quarantined
    assert round(checks["unplaced_rows"].metadata["quarantine_share"].value, 4) == 0.3636

    # A replay replaces the quarantined records of the slice too: nothing doubles.
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.count("clicks", "_quarantine") == 4
    assert warehouse.count("clicks", "events") == 7


def test_a_record_whose_keys_would_land_as_one_or_as_the_platforms_column_is_quarantined(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    values = [
        {"event_id": 1, "userId": 10, "user_id": 20},
        {"event_id": 2, "userId": 11},
        {"event_id": 3, "user_id": 12},
        {"event_id": 4, "_shard_id": "not this one"},
    ]
    put_json(client(moto_endpoint), stream, values, key="a")
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 4})
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]

    for _ in range(2):  # a replay replaces both the rows and the quarantined records
        result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: the slice failed on DuckDB's `no column with name "user_id_1"`, forever.
    assert warehouse.query("select event_id, user_id from clicks.events order by 1") == [
        (2, 11),
        (3, 12),
    ]
    assert warehouse.query("select reason, raw_value from clicks._quarantine order by 2") == [
        (
            "keys 'userId', 'user_id' would all land as column 'user_id', so one of their "
            "values would be lost",
            json.dumps(values[0]),
        ),
        (
            "key '_shard_id' would land as the platform's own column '_shard_id'; rename it "
            "at the producer",
            json.dumps(values[3]),
        ),
    ]
    metadata = result.asset_materializations_for_node("clicks__events")[0].metadata
    assert (metadata["records_read"].value, metadata["rows_landed"].value) == (4, 2)
    assert metadata["rows_quarantined"].value == 2


def test_a_nested_object_with_keys_differing_in_case_lands_whole_as_json(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    values = [{"event_id": 1, "a": {"X": 1, "x": 2}}, {"event_id": 2, "a": {"x": 3}}]
    put_json(client(moto_endpoint), stream, values, key="a")
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 2})
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]

    # Before: every landing of the slice failed on `Duplicate STRUCT type argument name "x"`.
    materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert warehouse.query("select event_id, a::varchar from clicks.events order by 1") == [
        (1, '{"X":1,"x":2}'),
        (2, '{"x":3}'),
    ]


def test_a_replay_past_retention_fails_clearly_and_keeps_the_landed_slice(
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
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    # As if the partition had been cut 30 hours ago, past the stream's 24 h retention.
    with warehouse.connect(read_only=False) as connection:
        connection.execute(
            "update clicks._partitions set first_arrival = first_arrival - interval 30 hours"
        )
    result = materialize(
        defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
    )
    assert not result.success
    message = failure_message(result)
    assert re.fullmatch(
        r"ingestion_platform.sources.kinesis.run.RetentionExceeded: "
        r"records before 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ are no longer "
        rf"in stream '{stream}' \(retention 24 h\), and this partition starts at "
        r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ; the landed rows of this partition were kept",
        message,
    ), message
    assert event_ids(warehouse, key) == list(range(1, 101))


def test_kill_9_during_a_load_then_a_rerun_loses_and_duplicates_nothing(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put_events(client(moto_endpoint), stream, 1, 20_000)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 20_000})
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    script = textwrap.dedent(
        f"""
        import dagster as dg
        from pathlib import Path
        from ingestion_platform.core.warehouse import WarehouseResource
        from ingestion_platform_tests.kinesis_emulators import declare
        defs = declare(Path({str(tmp_path)!r}), {moto_endpoint!r}, {stream!r},
                       batch={{"records": 20000}})
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("clicks__events", [{key!r}])
            dg.materialize(defs.assets, partition_key={key!r}, instance=instance,
                resources={{"warehouse": WarehouseResource(path={str(warehouse_path)!r})}})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if not warehouse_lock_is_free(warehouse):  # the child is in its landing transaction
            time.sleep(0.05)
            child.kill()  # SIGKILL: no clean-up of any kind
            break
        time.sleep(0.01)
    child.wait()
    assert child.returncode == -9, "the load finished before it could be killed"
    assert warehouse.count("clicks", "events") in (0, 20_000)  # all or nothing

    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 20_001))
    (unique,) = warehouse.query(
        "select count(distinct (_shard_id, _sequence_number)) from clicks.events"
    )[0]
    assert unique == 20_000


def test_throttling_and_an_expired_iterator_are_survived(
    moto_endpoint: str,
    stream: str,
    fault_proxy: tuple[FaultProxy, str],
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    proxy, endpoint = fault_proxy
    put_events(client(moto_endpoint), stream, 1, 200)
    defs = declare(tmp_path, endpoint, stream, batch={"records": 200})
    proxy.faults = {"ListShards": ["LimitExceededException"]}
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    proxy.faults = {
        "GetShardIterator": ["ProvisionedThroughputExceededException"],
        "GetRecords": [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "ExpiredIteratorException",
        ],
    }
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse) == list(range(1, 201))
    assert sorted(proxy.injected) == [
        "GetRecords:ExpiredIteratorException",
        "GetRecords:ProvisionedThroughputExceededException",
        "GetRecords:ThrottlingException",
        "GetShardIterator:ProvisionedThroughputExceededException",
        "ListShards:LimitExceededException",
    ]
    metadata = result.asset_materializations_for_node("clicks__events")[0].metadata
    assert metadata["throttled_retries"].value == 3
    assert metadata["iterators_renewed"].value == 1


def test_an_iterator_that_expires_mid_shard_resumes_after_the_last_record_read(
    moto_endpoint: str, stream: str, fault_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = fault_proxy
    kinesis = client(moto_endpoint)
    put(kinesis, stream, [{"Data": b'{"n": %d}' % n, "PartitionKey": "same"} for n in range(50)])
    reader = KinesisReader(
        make_client(StreamAddress(stream, "us-east-1", endpoint)),
        StreamAddress(stream, "us-east-1", endpoint),
        Backoff(base_seconds=0.01),
    )
    (shard,) = [s for s in reader.shards() if reader.read(s.shard_id).records]
    # Pass two pages through, then expire the iterator, then throttle the re-read once.
    proxy.faults = {"GetRecords": ["", "", "ExpiredIteratorException", "ThrottlingException"]}
    read = reader.read(shard.shard_id, limit_per_call=10)
    assert [json.loads(r.data)["n"] for r in read.records] == list(range(50))
    assert read.iterators_renewed == 1
    assert reader.throttled == 1


def test_a_time_window_lands_exactly_the_records_that_arrived_in_it(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    # Start right after a minute boundary, so both puts fall in known windows.
    time.sleep(60.5 - time.time() % 60 if time.time() % 60 > 50 else 0)
    first_minute = time.gmtime()
    put_events(kinesis, stream, 1, 40)
    time.sleep(61 - time.time() % 60)
    put_events(kinesis, stream, 41, 25)
    defs = declare(
        tmp_path,
        moto_endpoint,
        stream,
        batch={"every": "minute", "start": "2026-01-01"},
        grace_seconds=1,
    )
    key = time.strftime("%Y-%m-%dT%H:%M", first_minute)
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert event_ids(warehouse, key) == list(range(1, 41))
    metadata = result.asset_materializations_for_node("clicks__events")[0].metadata
    assert metadata["records_read"].value == 40
    assert sum(s["records"] for s in metadata["shard_ranges"].value.values()) == 40
    assert not warehouse.table_exists("clicks", "_partitions")  # windows need no manifest


def test_shards_are_listed_across_pages(kinesis_mock_endpoint: str) -> None:
    # On kinesis-mock: moto wants the stream's name again with NextToken, which AWS refuses.
    stream = new_stream(client(kinesis_mock_endpoint), 4, prefix="paged")
    address = StreamAddress(stream, "us-east-1", kinesis_mock_endpoint)
    reader = KinesisReader(make_client(address), address)
    paged = reader.shards(page_size=1)
    assert [shard.shard_id for shard in paged] == [f"shardId-00000000000{n}" for n in range(4)]
    assert reader.shards() == paged
