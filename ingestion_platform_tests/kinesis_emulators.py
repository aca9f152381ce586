"""Kinesis emulators for tests (kinesis-mock, and the fault-injecting proxy in front of moto's
server) and the steps the Kinesis tests share (a stream, declare a source, tick its sensor,
put records). moto's server itself is in moto_server.py.

Registered for every test module by `pytest_plugins` in conftest.py: `kinesis_mock_endpoint`,
`fault_proxy`, and `stream` (a new stream on moto's server, of 4 shards unless the test or its
module is marked `stream_shards(n)`). Each emulator runs as its own process on a free loopback
port, started by the fixture that needs it. A missing emulator fails the test, never skips it:
`make test` installs both.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from botocore.config import Config
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import RUN_KEY_TAG
from dagster._core.test_utils import create_run_for_test

from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.demo import kinesis_producer
from ingestion_platform.sources.kinesis.component import KinesisStreamSource
from ingestion_platform_tests.kinesis_proxies import FaultProxy
from ingestion_platform_tests.moto_server import aws_client
from ingestion_platform_tests.moto_server import start_moto as start_moto  # bench/ imports it
from ingestion_platform_tests.servers import free_port, stop_process, wait_listening
from ingestion_platform_tests.sources import build_source

ROOT = Path(__file__).resolve().parents[1]
KINESIS_MOCK = ROOT / ".kinesis-mock" / "node_modules" / "kinesis-local" / "main.js"
STREAM_SHARDS = 4  # the `stream` fixture's shards, unless marked `stream_shards(n)`


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stream_shards(n): the shards of the `stream` fixture's new stream (4)"
    )


def client(endpoint: str) -> object:
    """A plain boto3 client for putting records and resharding in tests."""
    return aws_client(
        "kinesis", endpoint, Config(retries={"total_max_attempts": 3, "mode": "standard"})
    )


def start_kinesis_mock() -> tuple[subprocess.Popen, str]:
    if not KINESIS_MOCK.exists():
        pytest.fail(f"kinesis-mock is not installed at {KINESIS_MOCK}; run `make kinesis-mock`")
    port = free_port()
    env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(free_port()),
        "SPLIT_SHARD_DURATION": "100ms",
        "MERGE_SHARDS_DURATION": "100ms",
        "CREATE_STREAM_DURATION": "100ms",
        "LOG_LEVEL": "WARN",
    }
    process = subprocess.Popen(
        ["node", str(KINESIS_MOCK)],
        cwd=KINESIS_MOCK.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, process, "kinesis-mock")
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kinesis_mock_endpoint() -> Iterator[str]:
    """kinesis-mock (resharding with ChildShards), for the whole session."""
    process, endpoint = start_kinesis_mock()
    yield endpoint
    stop_process(process)


def create_stream(kinesis: object, name: str, shards: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=shards)  # type: ignore[attr-defined]
    waiter = kinesis.get_waiter("stream_exists")  # type: ignore[attr-defined]
    waiter.wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def new_stream(kinesis: object, shards: int, prefix: str = "clicks") -> str:
    """Create a stream of `shards` shards under a new name `<prefix>-<8 hex>`; return it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_stream(kinesis, name, shards)
    return name


@pytest.fixture
def stream(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A new stream on moto's server: 4 shards, or the `stream_shards(n)` mark's n."""
    marker = request.node.get_closest_marker("stream_shards")
    return new_stream(client(moto_endpoint), marker.args[0] if marker else STREAM_SHARDS)


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[tuple[FaultProxy, str]]:
    """A fault-injecting proxy to moto's server; yields it and its endpoint URL."""
    with FaultProxy(moto_endpoint) as proxy:
        yield proxy, proxy.endpoint


SOURCE = "clicks"


def declare(folder: Path, endpoint: str, stream: str, **attributes: Any) -> dg.Definitions:
    """Build a KinesisStreamSource named `clicks` reading `stream` at `endpoint`."""
    base = {
        "stream": stream,
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "table": "events",
        "batch": {"records": 100},
    }
    return build_source(KinesisStreamSource, folder / SOURCE, {**base, **attributes})


def preview_tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    cursor: str | None = None,
    log: list[str] | None = None,
) -> dg.SensorResult:
    """One evaluation of the source's cutting sensor, thrown away as `dagster sensor preview`
    does (or as a daemon that dies before committing it). `log` collects what it logged."""
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": WarehouseResource(path=str(warehouse_path))},
    ) as context:
        if log is not None:
            collector = logging.Handler()
            collector.emit = lambda record: log.append(record.getMessage())  # type: ignore[method-assign]
            context.log.addHandler(collector)
        result = size_sensor(defs)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    cursor: str | None = None,
    log: list[str] | None = None,
    status: DagsterRunStatus = DagsterRunStatus.STARTED,
) -> dg.SensorResult:
    """One sensor evaluation against a real instance, committed as the daemon commits a tick:
    its partitions added and a run recorded for each request (in `status`, started unless
    told: a waiting run holds the next cuts), under its run key and tags. The test
    materialises the partitions itself. `log` collects what the tick logged."""
    result = preview_tick(defs, instance, warehouse_path, cursor, log)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for run in result.run_requests or []:
        create_run_for_test(
            instance,
            job_name="__ASSET_JOB",
            status=status,
            tags={**run.tags, RUN_KEY_TAG: run.run_key, "dagster/partition": run.partition_key},
        )
    return result


def size_sensor(defs: dg.Definitions) -> dg.SensorDefinition:
    """The source's cutting sensor (it also has a lag sensor)."""
    (sensor,) = [s for s in defs.sensors or [] if s.name == f"{SOURCE}__size_sensor"]
    return sensor


def wait_active(kinesis: Any, stream: str) -> None:
    """Wait until a resharded stream is ACTIVE again."""
    for _ in range(100):
        summary = kinesis.describe_stream_summary(StreamName=stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    pytest.fail(f"stream {stream} did not become ACTIVE")


def drain(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    expected: int,
    ticks: int = 8,
) -> None:
    """Tick and land until `expected` records have landed in clicks.events (a few ticks)."""
    from ingestion_platform_tests.sources import materialize

    warehouse = Warehouse(warehouse_path)
    resources = {"warehouse": WarehouseResource(path=str(warehouse_path))}
    for _ in range(ticks):
        for request in tick(defs, instance, warehouse_path).run_requests:
            materialize(
                defs, partition_key=request.partition_key, resources=resources, instance=instance
            )
        if warehouse.count("clicks", "events") >= expected:
            return
    pytest.fail(f"only {warehouse.count('clicks', 'events')} of {expected} records landed")


def split(kinesis: Any, stream: str) -> tuple[str, list[str]]:
    """Split shard 0 at the middle of its hash range; returns it and its two children."""
    shard0 = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low = int(shard0["HashKeyRange"]["StartingHashKey"])
    high = int(shard0["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=stream, ShardToSplit=shard0["ShardId"], NewStartingHashKey=str((low + high) // 2)
    )
    wait_active(kinesis, stream)
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    children = [s for s in shards if s.get("ParentShardId") == shard0["ShardId"]]
    children.sort(key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    return shard0["ShardId"], [child["ShardId"] for child in children]


def merge(kinesis: Any, stream: str, first: str, second: str) -> None:
    kinesis.merge_shards(StreamName=stream, ShardToMerge=first, AdjacentShardToMerge=second)
    wait_active(kinesis, stream)


def put_events(kinesis: Any, stream: str, first: int, count: int, malformed: float = 0.0) -> None:
    rng = random.Random(first)
    kinesis_producer.put(kinesis, stream, kinesis_producer.records(rng, first, count, malformed))


def put_json(kinesis: Any, stream: str, values: list[dict], key: str | None = None) -> None:
    entries = [
        {"Data": json.dumps(v).encode(), "PartitionKey": key or str(v.get("n", i))}
        for i, v in enumerate(values)
    ]
    kinesis_producer.put(kinesis, stream, entries)


def event_ids(warehouse: Warehouse, key: str | None = None) -> list[int]:
    where = "where _batch_key = ?" if key else ""
    rows = warehouse.query(
        f"select event_id from clicks.events {where} order by event_id",  # noqa: S608
        (key,) if key else (),
    )
    return [row[0] for row in rows]


def manifest_rows(warehouse: Warehouse) -> list[tuple]:
    return warehouse.query(
        "select partition_key, shard_id, first_sequence, last_sequence, records "
        "from clicks._partitions where partition_key <> '' order by partition_key, shard_id"
    )
