"""Kinesis emulators for tests (moto's server, kinesis-mock, a fault-injecting proxy) and the
steps the Kinesis tests share (declare a source, tick its sensor, put records).

Each runs as its own process on a free loopback port, started by the fixture that needs it.
A missing emulator fails the test, never skips it: `make test` installs both.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
from botocore.config import Config
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import RUN_KEY_TAG
from dagster._core.test_utils import create_run_for_test

from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.demo import kinesis_producer
from ingestion_platform.sources.kinesis.component import KinesisStreamSource
from ingestion_platform_tests.sources import build_source

ROOT = Path(__file__).resolve().parents[1]
KINESIS_MOCK = ROOT / ".kinesis-mock" / "node_modules" / "kinesis-local" / "main.js"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {seconds}s")


def client(endpoint: str) -> object:
    """A plain boto3 client for putting records and resharding in tests."""
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 3, "mode": "standard"}),
    )


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(port, process, "moto's server")
    return process, f"http://127.0.0.1:{port}"


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
    _wait_for(port, process, "kinesis-mock")
    return process, f"http://127.0.0.1:{port}"


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, and kill what has not exited 3 s later (an xdist worker's children can
    inherit SIGTERM ignored)."""
    process.terminate()
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's Kinesis on a free loopback port, for the whole session."""
    process, endpoint = start_moto()
    yield endpoint
    stop_process(process)


@pytest.fixture(scope="session")
def kinesis_mock_endpoint() -> Iterator[str]:
    """kinesis-mock (resharding with ChildShards), for the whole session."""
    process, endpoint = start_kinesis_mock()
    yield endpoint
    stop_process(process)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulator credentials through the standard AWS chain (environment variables)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def create_stream(kinesis: object, name: str, shards: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=shards)  # type: ignore[attr-defined]
    waiter = kinesis.get_waiter("stream_exists")  # type: ignore[attr-defined]
    waiter.wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


@dataclass
class FaultProxy:
    """An HTTP proxy in front of an emulator that answers some calls with a Kinesis error.

    `faults` maps an operation (`GetRecords`) to a list of error codes to return, one per
    call, before calls pass through again. No emulator throttles, so this is how throttling
    and expired iterators are exercised against a real server.
    """

    upstream: str
    faults: dict[str, list[str]] = field(default_factory=dict)
    injected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, operation: str) -> str | None:
        with self.lock:
            pending = self.faults.get(operation)
            if pending:
                code = pending.pop(0)
                if code:  # an empty entry lets that call through
                    self.injected.append(f"{operation}:{code}")
                    return code
        return None


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[tuple[FaultProxy, str]]:
    """A fault-injecting proxy to moto's server; yields it and its endpoint URL."""
    proxy = FaultProxy(moto_endpoint)
    upstream = moto_endpoint.removeprefix("http://")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
            code = proxy.take(operation)
            if code is not None:
                payload = json.dumps({"__type": code, "message": f"injected {code}"}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            connection = http.client.HTTPConnection(upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
    sensor = size_sensor(defs)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": WarehouseResource(path=str(warehouse_path))},
    ) as context:
        if log is not None:
            collector = logging.Handler()
            collector.emit = lambda record: log.append(record.getMessage())  # type: ignore[method-assign]
            context.log.addHandler(collector)
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
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
