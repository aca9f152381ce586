"""Peers that fail: a read that never answers, HTTP 500s with codes no retry list knows."""

import functools
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.kinesis.component import KinesisStreamSource
from ingestion_platform.sources.kinesis.connectors import kinesis
from ingestion_platform.sources.kinesis.connectors.retry import Backoff
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    event_ids,
    new_stream,
    put_events,
    put_json,
    tick,
)
from ingestion_platform_tests.kinesis_proxies import ServerErrorProxy, StallProxy
from ingestion_platform_tests.sources import build_source, failure_message, materialize

pytestmark = [pytest.mark.usefixtures("aws_env"), pytest.mark.stream_shards(2)]


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's retry policy with millisecond delays (the same attempts)."""
    monkeypatch.setattr(kinesis, "Backoff", functools.partial(Backoff, base_seconds=0.001))


def _cut(
    tmp_path: Path, endpoint: str, stream: str, warehouse_path: Path, instance: dg.DagsterInstance
) -> str:
    put_events(client(endpoint), stream, 1, 100)
    defs = declare(tmp_path, endpoint, stream)
    (key,) = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    return key


def test_a_read_that_never_answers_times_out_naming_the_source(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    key = _cut(tmp_path, moto_endpoint, stream, warehouse_path, instance)
    with StallProxy(moto_endpoint) as proxy:
        defs = declare(tmp_path, proxy.endpoint, stream, read_timeout_seconds=1)
        started = time.monotonic()
        result = materialize(
            defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
        )
        took = time.monotonic() - started
    assert not result.success
    assert failure_message(result) == (
        "ingestion_platform.core.declaration.SourceFailure: source 'clicks' "
        f"({tmp_path}/clicks/defs.yaml): Kinesis did not answer DescribeStreamSummary within "
        f"1s (read_timeout_seconds) at {proxy.endpoint} in region us-east-1. Fix: check that "
        "the endpoint is up and answers, or raise `read_timeout_seconds`"
    )
    assert took < 20  # not retried call after call (10 x 30 s before)
    assert warehouse.count("clicks", "events") == 0


def test_a_hung_read_holds_no_warehouse_slot_and_another_source_lands_meanwhile(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    key = _cut(tmp_path, moto_endpoint, stream, warehouse_path, instance)
    other = new_stream(client(moto_endpoint), 1, prefix="orders")
    put_json(client(moto_endpoint), other, [{"n": n} for n in range(30)])
    orders = build_source(
        KinesisStreamSource,
        tmp_path / "orders",
        {
            "stream": other,
            "region": "us-east-1",
            "endpoint_url": moto_endpoint,
            "batch": {"records": 30},
        },
    )
    (sensor,) = [s for s in orders.sensors or [] if s.name == "orders__size_sensor"]
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        cut = sensor(context)
    assert isinstance(cut, dg.SensorResult)
    (order_key,) = [r.partition_key for r in cut.run_requests]
    instance.add_dynamic_partitions(f"orders__{other.replace('-', '_')}", [order_key])

    with StallProxy(moto_endpoint) as proxy:
        hung = declare(tmp_path, proxy.endpoint, stream, read_timeout_seconds=120)
        (asset,) = hung.assets or []
        assert isinstance(asset, dg.AssetsDefinition) and asset.op.pool is None
        results: list[dg.ExecuteInProcessResult] = []
        reading = threading.Thread(
            target=lambda: results.append(
                materialize(hung, partition_key=key, resources=resources, instance=instance)
            )
        )
        reading.start()
        assert proxy.holding.wait(timeout=60)
        # The clicks run waits on its peer; orders lands meanwhile.
        landed = materialize(
            orders, partition_key=order_key, resources=resources, instance=instance
        )
        assert landed.success
        assert reading.is_alive() and not proxy.released.is_set()
        proxy.release()
        reading.join(timeout=120)
    assert results and results[0].success
    assert event_ids(warehouse) == list(range(1, 101))
    assert warehouse.count("orders", other.replace("-", "_")) == 30


@pytest.mark.usefixtures("quick_backoff")
def test_http_500s_with_an_unlisted_error_code_are_retried(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    key = _cut(tmp_path, moto_endpoint, stream, warehouse_path, instance)
    with ServerErrorProxy(moto_endpoint, "GetRecords", times=3, code="500") as proxy:
        defs = declare(tmp_path, proxy.endpoint, stream)
        result = materialize(defs, partition_key=key, resources=resources, instance=instance)
        assert proxy.answered == 3
    assert event_ids(warehouse) == list(range(1, 101))
    metadata = result.asset_materializations_for_node("clicks__events")[0].metadata
    assert metadata["throttled_retries"].value == 3


@pytest.mark.usefixtures("quick_backoff")
def test_http_500s_past_the_retries_fail_naming_the_source_and_the_fix(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    key = _cut(tmp_path, moto_endpoint, stream, warehouse_path, instance)
    with ServerErrorProxy(moto_endpoint, "GetRecords", times=1000, code="InternalFailure.") as (
        proxy
    ):
        defs = declare(tmp_path, proxy.endpoint, stream)
        result = materialize(
            defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
        )
    assert failure_message(result) == (
        "ingestion_platform.core.declaration.SourceFailure: source 'clicks' "
        f"({tmp_path}/clicks/defs.yaml): Kinesis answered GetRecords with HTTP 500 "
        "(InternalFailure.: We encountered an internal error.) 10 times in a row at "
        f"{proxy.endpoint} in region us-east-1. Fix: the service is failing; re-run the "
        "partition once it answers again, and check the endpoint's health if it persists"
    )
    assert warehouse.count("clicks", "events") == 0
