"""RabbitMQ sources on the machine's RabbitMQ (127.0.0.1:5672, streams on 5552): a queue
drained land-then-ack (kill -9 and a cut connection between commit and ack, and every
message still lands once) and a stream landed as exact, replayable offset ranges."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.rabbitmq.component import RabbitMqSource
from ingestion_platform_tests.brokers import (
    RABBITMQ,
    RABBITMQ_STREAMS,
    CuttableProxy,
    RabbitNames,
    publish,
    queue_depth,
    rabbit_names,
    rabbitmq_channel,
)
from ingestion_platform_tests.e2e.dagster_dev import free_port
from ingestion_platform_tests.sources import (
    build_source,
    failure_message,
    materialize,
    requested_keys,
    tick_size_sensor,
)


@pytest.fixture
def rabbit() -> Iterator[RabbitNames]:
    with rabbit_names() as names:
        yield names


@pytest.fixture(autouse=True)
def _sensor_finds_the_warehouse(warehouse_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A queue's sensor commits to the buffer in the warehouse, found as a deployment does.
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))


def _readings(first: int, count: int) -> list[bytes]:
    return [
        json.dumps({"id": n, "device": f"d{n % 3}", "celsius": n / 10}).encode()
        for n in range(first, first + count)
    ]


def _ids(first: int, count: int) -> list[str]:
    return [f"r{n}" for n in range(first, first + count)]


def _defs(tmp_path: Path, **attributes: Any) -> dg.Definitions:
    base = {"table": "readings", "batch": {"records": 100}, "drain_seconds": 5}
    return build_source(RabbitMqSource, tmp_path / "plant", {**base, **attributes})


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    return tick_size_sensor(defs, instance, "plant__size_sensor")


def test_a_queue_is_buffered_then_acknowledged_and_each_range_lands_once(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    queue = rabbit.queue()
    publish(queue, _readings(1, 250), message_ids=_ids(1, 250))
    defs = _defs(tmp_path, queue=queue, prefetch=64)
    assert requested_keys(_tick(defs, instance)) == ["..200"]
    assert queue_depth(queue) == 0  # every message committed to the buffer, then acknowledged
    for _ in range(2):  # a replay replaces the same rows
        materialize(defs, partition_key="..200", resources=resources, instance=instance)
    assert warehouse.query(
        "select count(*), count(distinct id), min(id), max(id), round(sum(celsius), 1), "
        "min(_partition_key) from plant.readings"
    ) == [(200, 200, 1, 200, 2010.0, queue)]
    publish(queue, _readings(251, 50), message_ids=_ids(251, 50))
    assert requested_keys(_tick(defs, instance)) == ["200..300"]
    materialize(defs, partition_key="200..300", resources=resources, instance=instance)
    assert warehouse.query("select count(*), count(distinct id), max(id) from plant.readings") == [
        (300, 300, 300)
    ]
    assert warehouse.query("select count(*), max(seq) from plant._buffer") == [(300, 300)]


KILLED_DRAIN = """
import os, signal, sys
from ingestion_platform.core import message_buffer
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.rabbitmq.connectors.amqp_queue import AmqpSettings, drain
warehouse = Warehouse(sys.argv[1])
def commit(messages):
    message_buffer.append(warehouse, "plant", [message_buffer.BufferedMessage(
        m.message_id, m.routing_key, m.body, m.arrived_ms) for m in messages])
    os.kill(os.getpid(), signal.SIGKILL)  # committed, never acknowledged
drain(AmqpSettings("127.0.0.1", 5672, "/", "guest", "guest"), sys.argv[2], commit, prefetch=40)
"""


def test_a_drain_killed_between_commit_and_ack_lands_every_message_once(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    warehouse_path: Path, resources: dict[str, Any],
) -> None:  # fmt: skip
    queue = rabbit.queue()
    publish(queue, _readings(1, 100), message_ids=_ids(1, 100))
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRAIN, str(warehouse_path), queue], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    # The first window (half the prefetch, or what came before a pause) was committed, then
    # the process died.
    ((committed,),) = warehouse.query("select count(*) from plant._buffer")
    assert 0 < committed <= 20
    assert queue_depth(queue) == 100  # the dead consumer's 40 went back to the queue
    defs = _defs(tmp_path, queue=queue)
    assert requested_keys(_tick(defs, instance)) == ["..100"]  # 40 redelivered, known by id
    materialize(defs, partition_key="..100", resources=resources, instance=instance)
    assert warehouse.query("select count(*), count(distinct id) from plant.readings") == [
        (100, 100)
    ]


def test_a_connection_cut_between_commit_and_ack_redelivers_and_lands_once(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    from ingestion_platform.core import message_buffer
    from ingestion_platform.sources.rabbitmq.connectors import amqp_queue

    queue = rabbit.queue()
    publish(queue, _readings(1, 150), message_ids=_ids(1, 150))
    with CuttableProxy(RABBITMQ) as proxy:
        settings = amqp_queue.AmqpSettings("127.0.0.1", proxy.port, "/", "guest", "guest")
        commits: list[int] = []

        def commit_then_cut(messages: list[amqp_queue.QueuedMessage]) -> None:
            buffered = [
                message_buffer.BufferedMessage(m.message_id, m.routing_key, m.body, m.arrived_ms)
                for m in messages
            ]
            message_buffer.append(warehouse, "plant", buffered)
            commits.append(len(messages))
            if len(commits) == 2:
                proxy.cut()  # the broker is gone before the second window is acknowledged

        with pytest.raises(amqp_queue.AmqpUnreachable, match="lost the connection"):
            amqp_queue.drain(settings, queue, commit_then_cut, prefetch=50)
        # The cut is seen at the second acknowledgement (a window received meanwhile may
        # be committed too): committed, never acknowledged.
        assert len(commits) >= 2
        proxy.restore()
        defs = _defs(tmp_path, queue=queue, port=proxy.port)
        assert requested_keys(_tick(defs, instance)) == ["..100"]
    assert queue_depth(queue) == 0
    assert warehouse.query("select count(*), count(distinct message_id) from plant._buffer") == [
        (150, 150)
    ]


def test_poison_messages_are_quarantined_and_the_counts_reconcile(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    queue = rabbit.queue()
    publish(queue, _readings(1, 8) + [b"oops", b"\xff"], message_ids=_ids(1, 10))
    defs = _defs(tmp_path, queue=queue, batch={"records": 10})
    (key,) = requested_keys(_tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.query("select count(*) from plant.readings") == [(8,)]
    assert sorted(warehouse.query("select raw_value, reason from plant._quarantine")) == [
        ("\\xff", "not UTF-8 text: invalid start byte at byte 0"),
        ("oops", "invalid JSON: Expecting value at line 1 column 1"),
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_quarantined"].value == 2


def _stream_with_wildcard_binding(names: RabbitNames) -> str:
    stream = names.stream()
    with rabbitmq_channel() as channel:
        channel.queue_bind(stream, "amq.topic", routing_key=f"{names.prefix}.plant.*")
    return stream


def _publish_readings(names: RabbitNames, first: int, count: int) -> None:
    keys = [f"{names.prefix}.plant.d{n % 3}" for n in range(first, first + count)]
    publish("", _readings(first, count), exchange="amq.topic", routing_keys=keys)


def test_a_stream_partition_is_an_exact_offset_range_and_a_replay_reads_it_again(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    stream = _stream_with_wildcard_binding(rabbit)
    _publish_readings(rabbit, 1, 250)
    publish("", [b"{}"], exchange="amq.topic", routing_keys=[f"{rabbit.prefix}.other"])
    defs = _defs(tmp_path, stream=stream)
    assert requested_keys(_tick(defs, instance)) == ["..200"]  # two full batches, one run
    for _ in range(2):  # a replay reads the same offsets and replaces the same rows
        materialize(defs, partition_key="..200", resources=resources, instance=instance)
    assert warehouse.query(
        "select count(*), count(distinct id), min(id), max(id), "
        "min(cast(_sequence_number as int)), max(cast(_sequence_number as int)), "
        "count(distinct _partition_key) from plant.readings"
    ) == [(200, 200, 1, 200, 0, 199, 3)]
    _publish_readings(rabbit, 251, 50)
    assert requested_keys(_tick(defs, instance)) == ["200..300"]
    materialize(defs, partition_key="200..300", resources=resources, instance=instance)
    assert warehouse.query("select count(*), count(distinct id), max(id) from plant.readings") == [
        (300, 300, 300)
    ]


def test_a_stream_read_cut_mid_way_fails_untouched_and_a_retry_lands_the_exact_range(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    stream = rabbit.stream()
    publish(stream, _readings(1, 2000))
    # Reached through a proxy that breaks the connection once some 60 kB have gone by, as a
    # broker restart or a dropped link does mid-read.
    with CuttableProxy(RABBITMQ_STREAMS, cut_after=60_000) as proxy:
        defs = _defs(tmp_path, stream=stream, stream_port=proxy.port, stream_load_balancer=True,
                     batch={"records": 2000}, timeout_seconds=3)  # fmt: skip
        assert proxy.cut_after and requested_keys(_tick(defs, instance)) == ["..2000"]
        proxy.restore()
        proxy.cut_after = proxy.forwarded + 60_000
        result = materialize(
            defs, partition_key="..2000", resources=resources, instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        message = failure_message(result).removeprefix(
            "ingestion_platform.core.declaration.SourceFailure: "
        )
        assert message.startswith(
            f"source 'plant' ({tmp_path}/plant/defs.yaml): RabbitMQ at 127.0.0.1:{proxy.port} "
            f"(vhost '/') lost the connection reading stream '{stream}' after offset "
        )
        assert message.endswith("nothing of this read was landed, and a retry reads the same range")
        assert not warehouse.table_exists("plant", "readings")
        proxy.restore()
        materialize(defs, partition_key="..2000", resources=resources, instance=instance)
    assert warehouse.query(
        "select count(*), count(distinct id), min(id), max(id), "
        "count(distinct _sequence_number) from plant.readings"
    ) == [(2000, 2000, 1, 2000, 2000)]


def test_stream_slices_that_retention_dropped_fail_and_keep_their_rows(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance, warehouse: Warehouse,
    resources: dict[str, Any],
) -> None:  # fmt: skip
    stream = rabbit.stream(
        **{"x-max-length-bytes": 10_000, "x-stream-max-segment-size-bytes": 5_000}
    )
    publish(stream, _readings(1, 20))
    defs = _defs(tmp_path, stream=stream, batch={"records": 20})
    (landed,) = requested_keys(_tick(defs, instance))
    materialize(defs, partition_key=landed, resources=resources, instance=instance)
    ((first,),) = warehouse.query("select min(_sequence_number::int) from plant.readings")
    publish(stream, _readings(21, 20))
    (waiting,) = requested_keys(_tick(defs, instance))  # cut, its run not started yet
    publish(stream, _readings(41, 300))  # retention drops the oldest segments
    prefix = "ingestion_platform.core.declaration.SourceFailure: "
    fix = (
        "so it cannot be read again exactly. The rows landed for it before stay as they "
        "were; raise the stream's max-age or max-length-bytes so a slice outlives the time it "
        "may wait"
    )
    # A slice that landed before: its rows came from offsets the stream no longer holds.
    result = materialize(
        defs, partition_key=landed, resources=resources, instance=instance, raise_on_error=False
    )
    message = failure_message(result).removeprefix(prefix)
    assert message.startswith(
        f"source 'plant' ({tmp_path}/plant/defs.yaml): partition {landed}: this slice landed "
        f"messages from offset {first}, and stream '{stream}' now starts at offset "
    )
    assert message.endswith(f"its retention dropped them, {fix}")
    # A slice never landed: the stream now starts past its first offset.
    result = materialize(
        defs, partition_key=waiting, resources=resources, instance=instance, raise_on_error=False
    )
    lo = waiting.split("..")[0]
    message = failure_message(result).removeprefix(prefix)
    assert message.startswith(
        f"source 'plant' ({tmp_path}/plant/defs.yaml): partition {waiting}: stream "
        f"'{stream}' now starts at offset "
    )
    assert message.endswith(
        f": messages from offset {lo} of this slice were dropped by its retention, {fix}"
    )
    assert warehouse.query("select count(*), max(id) from plant.readings") == [(20, 20)]


def _lag(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, Any]:
    (sensor,) = [s for s in defs.sensors or [] if s.name == "plant__lag"]
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    (evaluation,) = [e for e in result.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    figures = {name: value.value for name, value in evaluation.metadata.items()}
    return {"waiting": figures["waiting_messages"], **figures, **figures["detail"]}


def test_the_lag_counts_what_waits_at_the_broker_and_in_the_buffer(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance
) -> None:
    stream, queue = rabbit.stream(), rabbit.queue()
    publish(stream, _readings(1, 30))
    publish(queue, _readings(1, 30), message_ids=_ids(1, 30))
    stream_defs = _defs(tmp_path / "s", stream=stream)
    lag = _lag(stream_defs, instance)
    assert (lag["waiting"], lag["newest_position"], lag["cut_through"]) == (30, 30, 0)
    assert 0 <= lag["oldest_waiting_seconds"] < 30
    queue_defs = _defs(tmp_path / "q", queue=queue)
    lag = _lag(queue_defs, instance)
    assert (lag["waiting"], lag["at_broker"], lag["in_buffer"]) == (30, 30, 0)
    assert requested_keys(_tick(queue_defs, instance)) == []  # drained: 30 of 100
    lag = _lag(queue_defs, instance)
    assert (lag["waiting"], lag["at_broker"], lag["in_buffer"]) == (30, 0, 30)
    assert 0 <= lag["oldest_waiting_seconds"] < 30


def test_refused_credentials_and_a_broker_that_is_down_name_the_source_and_the_fix(
    tmp_path: Path, rabbit: RabbitNames, instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    queue, stream = rabbit.queue(), rabbit.stream()
    defs_file = tmp_path / "plant" / "defs.yaml"
    monkeypatch.setenv("PLANT_RABBITMQ_PASSWORD", "wrong")
    secret = {"password": {"env": "PLANT_RABBITMQ_PASSWORD"}}
    for kind in ({"queue": queue}, {"stream": stream}):
        with pytest.raises(Exception, match="refused the credentials") as refused:
            _tick(_defs(tmp_path, **kind, **secret), instance)
        assert str(refused.value) == (
            f"source 'plant' ({defs_file}): RabbitMQ at 127.0.0.1:"
            f"{5672 if 'queue' in kind else 5552} (vhost '/') refused the credentials of user "
            "'guest'. Fix: correct `username:` and `password:` (or the environment variables "
            "they name)"
        )
    down = free_port()
    for kind, port in (({"queue": queue}, "port"), ({"stream": stream}, "stream_port")):
        plugin = " and its stream plugin" if port == "stream_port" else ""
        with pytest.raises(Exception, match="cannot reach RabbitMQ") as unreachable:
            _tick(_defs(tmp_path, **kind, **{port: down}), instance)
        assert str(unreachable.value) == (
            f"source 'plant' ({defs_file}): cannot reach RabbitMQ at 127.0.0.1:{down} (vhost "
            f"'/'): connection refused. Fix: start the broker{plugin} (`make services`), or "
            f"correct `host:` and `{port}:`"
        )


def test_the_declaration_names_its_file_and_loads_with_no_broker_or_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLANT_RABBITMQ_PASSWORD", raising=False)
    defs = _defs(tmp_path, queue="q", host="127.0.0.1", port=free_port(),
                 password={"env": "PLANT_RABBITMQ_PASSWORD"})  # fmt: skip
    assert [s.name for s in defs.sensors or []] == ["plant__size_sensor", "plant__lag"]
    with pytest.raises(Exception, match="set exactly one of") as both:
        _defs(tmp_path, queue="q", stream="s")
    assert str(both.value) == (
        f"{tmp_path}/plant/defs.yaml: queue: a RabbitMQ source reads one queue or one stream. "
        "Fix: set exactly one of `queue:` and `stream:`."
    )
