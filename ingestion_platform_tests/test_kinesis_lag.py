"""The source_lag measure of a stream: records no partition holds, read at the stream itself."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.lag import SOURCE_LAG, LagRule, evaluate
from ingestion_platform.core.warehouse import WAREHOUSE_PATH_ENV, Warehouse
from ingestion_platform.sources.kinesis.connectors.kinesis import (
    KinesisReader,
    StreamAddress,
    make_client,
)
from ingestion_platform.sources.kinesis.lag import kinesis_lag_measure
from ingestion_platform.sources.kinesis.sensor import StartAt
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    drain,
    new_stream,
    preview_tick,
    put_events,
    split,
    tick,
)
from ingestion_platform_tests.kinesis_proxies import EmptyPagesProxy, StallProxy

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(autouse=True)
def _warehouse_env(monkeypatch: pytest.MonkeyPatch, warehouse_path: Path) -> None:
    # The lag sensor reads the warehouse the deployment's resource points at (its env).
    monkeypatch.setenv(WAREHOUSE_PATH_ENV, str(warehouse_path))


def _lag(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    """One tick of the source's lag sensor: its check evaluation of clicks/events."""
    (sensor,) = [s for s in defs.sensors or [] if s.name == "clicks__lag"]
    with dg.build_sensor_context(instance=instance) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    (evaluation,) = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert evaluation.check_name == SOURCE_LAG
    return evaluation


def _figures(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {name: value.value for name, value in evaluation.metadata.items()}


def test_records_past_the_newest_cut_are_waiting_and_an_uncommitted_cut_is_not_held(
    moto_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    stream = new_stream(kinesis, 4)
    put_events(kinesis, stream, 1, 250)
    defs = declare(tmp_path, moto_endpoint, stream)
    before = _figures(_lag(defs, instance))
    assert before["waiting_records"] == 250
    assert sum(before["detail"].values()) == 250 and len(before["detail"]) == 4
    assert 0 < before["oldest_waiting_seconds"] < 600

    # Two full batches of 100, cut as one partition (core/backlog.py); 50 records wait.
    assert len(tick(defs, instance, warehouse_path).run_requests) == 1
    after = _figures(_lag(defs, instance))
    assert after["waiting_records"] == 50
    assert sum(after["detail"].values()) == 50

    # A cut that never became a partition (a preview) holds nothing: still waiting.
    put_events(kinesis, stream, 251, 100)
    preview = preview_tick(defs, instance, warehouse_path)
    assert isinstance(preview, dg.SensorResult) and len(preview.run_requests) == 1
    assert _figures(_lag(defs, instance))["waiting_records"] == 150
    assert len(tick(defs, instance, warehouse_path).run_requests) == 1
    assert _figures(_lag(defs, instance))["waiting_records"] == 50


def test_the_closed_shard_stall_shows_as_records_waiting_and_fails_the_check(
    kinesis_mock_endpoint: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(kinesis_mock_endpoint)
    stream = new_stream(kinesis, 2)
    with EmptyPagesProxy(kinesis_mock_endpoint, empty_pages=3) as proxy:
        defs = declare(tmp_path, proxy.endpoint, stream, batch={"records": 1000, "max_wait": "0s"})
        put_events(kinesis, stream, 1, 100)
        drain(defs, instance, warehouse_path, 100)
        put_events(kinesis, stream, 101, 30)
        parent, children = split(kinesis, stream)
        put_events(kinesis, stream, 131, 100)
        # The old reader took a closed shard's first empty page for its end: it cut nothing
        # more, from the parent or its children. Simulated here by cutting nothing.
        evaluation = _lag(defs, instance)
        figures = _figures(evaluation)
        assert figures["waiting_records"] == 130
        assert figures["detail"][parent] > 0
        assert all(figures["detail"].get(child, 0) > 0 for child in children)
        # Within the batch's allowance now; a while later the check fails.
        assert evaluation.passed
        address = StreamAddress(stream, "us-east-1", proxy.endpoint)
        measure = kinesis_lag_measure(
            source=SourceContext("clicks", str(tmp_path / "clicks" / "defs.yaml")),
            open_reader=lambda: KinesisReader(make_client(address), address),
            partitions_def=dg.DynamicPartitionsDefinition(name="clicks__events"),
            asset_key=dg.AssetKey(["clicks", "events"]),
            start_at=StartAt("TRIM_HORIZON"),
            unit="records",
            cap=1000,
            warehouse=lambda: warehouse,
        )
        rule = LagRule(warn_after=timedelta(minutes=1), fail_after=timedelta(minutes=2))
        later, _ = evaluate(
            dg.AssetKey(["clicks", "events"]),
            measure,
            instance,
            rule,
            datetime.now(UTC) + timedelta(minutes=5),
        )
        assert proxy.served > 0
    assert not later.passed and later.severity == dg.AssetCheckSeverity.ERROR
    assert later.description is not None
    assert later.description.startswith("130 records wait at the source; the oldest for 0:05:")


def test_an_unanswering_stream_fails_the_measure_naming_the_source(
    moto_endpoint: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    stream = new_stream(client(moto_endpoint), 1)
    with StallProxy(moto_endpoint) as proxy:
        defs = declare(tmp_path, proxy.endpoint, stream, read_timeout_seconds=1)
        evaluation = _lag(defs, instance)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == (
        f"could not measure the source: source 'clicks' ({tmp_path}/clicks/defs.yaml): lag not "
        f"measured: Kinesis did not answer DescribeStreamSummary within 1s "
        f"(read_timeout_seconds) at {proxy.endpoint} in region us-east-1. Fix: check that the "
        "endpoint is up and answers, or raise `read_timeout_seconds`"
    )
