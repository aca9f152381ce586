"""JetStream sources on real NATS servers: the machine's (127.0.0.1:4222) and, for a broker
that restarts or asks for a token, one the test starts itself."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import nats
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.nats.component import NatsJetStreamSource
from ingestion_platform.sources.nats.connectors.jetstream import (
    JetStreamSettings,
    _read_ordered,
    read_range,
)
from ingestion_platform_tests.e2e.dagster_dev import free_port
from ingestion_platform_tests.sources import (
    build_source,
    failure_message,
    materialize,
    requested_keys,
    tick_size_sensor,
)

NATS = "nats://127.0.0.1:4222"
NATS_SERVER = "/usr/sbin/nats-server"


def _publish(url: str, stream: str, messages: list[tuple[str, bytes]], token: str | None = None):
    async def run() -> None:
        client = await nats.connect(url, token=token)
        js = client.jetstream()
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for subject, data in messages:
            await js.publish(subject, data)
        await client.close()

    asyncio.run(run())


def _readings(stream: str, first: int, count: int, subject: str = "fleet") -> list:
    return [
        (
            f"{stream}.{subject}",
            json.dumps({"id": n, "sensor": f"s{n % 5}", "celsius": n / 10}).encode(),
        )
        for n in range(first, first + count)
    ]


def _delete(url: str, stream: str) -> None:
    async def run() -> None:
        client = await nats.connect(url)
        try:
            await client.jetstream().delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
        await client.close()

    asyncio.run(run())


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"IOT_{uuid.uuid4().hex[:8].upper()}"
    yield name
    _delete(NATS, name)


def _defs(tmp_path: Path, stream: str, **attributes: Any) -> dg.Definitions:
    base = {"stream": stream, "servers": NATS, "table": "readings", "batch": {"records": 100}}
    return build_source(NatsJetStreamSource, tmp_path / "iot", {**base, **attributes})


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    return tick_size_sensor(defs, instance, "iot__size_sensor")


def test_ranges_are_cut_exactly_and_each_message_lands_once_even_when_replayed(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    _publish(NATS, stream, _readings(stream, 1, 250))
    defs = _defs(tmp_path, stream)
    # Two full batches wait at once: one partition holds both (docs/batch.md).
    assert requested_keys(_tick(defs, instance)) == ["..200"]
    materialize(defs, partition_key="..200", resources=resources, instance=instance)
    rows = warehouse.query(
        "select id, sensor, celsius, _sequence_number from iot.readings order by id"
    )
    assert rows == [(n, f"s{n % 5}", n / 10, str(n)) for n in range(1, 201)]

    _publish(NATS, stream, _readings(stream, 251, 60))
    assert requested_keys(_tick(defs, instance)) == ["200..300"]
    materialize(defs, partition_key="200..300", resources=resources, instance=instance)
    # A replay of the first range reads the same 200 messages and replaces them.
    materialize(defs, partition_key="..200", resources=resources, instance=instance)
    assert warehouse.query(
        "select count(*), count(distinct id), min(id), max(id) from iot.readings"
    ) == [(300, 300, 1, 300)]
    assert warehouse.count("iot", "readings", batch="200..300") == 100


def test_a_number_past_its_column_type_is_quarantined_not_landed_as_null(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    """JSON numbers infer as BIGINT, and json_transform turned 2^64 - 1 into NULL unseen;
    such a record is quarantined naming the key, and lands once its type is declared."""
    messages = [
        b'{"id": 1, "counter": 1}',
        b'{"id": 2, "counter": 18446744073709551615}',
        b'{"id": 3, "counter": 9223372036854775808}',
        b'{"id": 4, "counter": 9223372036854775807}',
    ]
    _publish(NATS, stream, [(f"{stream}.fleet", message) for message in messages])
    defs = _defs(tmp_path, stream, batch={"records": 4})
    (key,) = requested_keys(_tick(defs, instance))

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert warehouse.query("select id, counter from iot.readings order by id") == [
        (1, 1),
        (4, 9223372036854775807),
    ]
    assert warehouse.query("select file, reason from iot._quarantine order by file") == [
        (f"{stream}:2", "counter: 18446744073709551615 does not fit BIGINT"),
        (f"{stream}:3", "counter: 9223372036854775808 does not fit BIGINT"),
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_quarantined"].value == 2

    declared = _defs(tmp_path, stream, batch={"records": 4}, columns={"counter": "UBIGINT"})
    materialize(declared, partition_key=key, resources=resources, instance=instance)
    assert warehouse.query("select id, counter::varchar from iot.readings order by id") == [
        (1, "1"),
        (2, "18446744073709551615"),
        (3, "9223372036854775808"),
        (4, "9223372036854775807"),
    ]
    assert warehouse.count("iot", "_quarantine") == 0


def test_a_value_a_declared_type_cannot_hold_is_quarantined_not_landed_as_null(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    messages = [b'{"id": 1, "celsius": 20.5}', b'{"id": 2, "celsius": "hot"}', b'{"id": 3}']
    _publish(NATS, stream, [(f"{stream}.fleet", message) for message in messages])
    defs = _defs(tmp_path, stream, batch={"records": 3}, columns={"celsius": "DOUBLE"})
    (key,) = requested_keys(_tick(defs, instance))

    materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert warehouse.query("select id, celsius from iot.readings order by id") == [
        (1, 20.5),
        (3, None),  # absent, not refused
    ]
    assert warehouse.query("select file, reason from iot._quarantine") == [
        (f"{stream}:2", 'celsius: "hot" does not fit DOUBLE')
    ]


def test_a_stream_that_does_not_exist_is_named_with_the_fix(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, stream)  # the fixture's name; nothing published, so no stream
    with pytest.raises(Exception, match="has no JetStream stream") as missing:
        _tick(defs, instance)
    assert str(missing.value) == (
        f"source 'iot' ({tmp_path / 'iot' / 'defs.yaml'}): NATS at {NATS} has no JetStream "
        f"stream {stream!r}. Fix: create it (`nats stream add`), or correct `stream:`"
    )


def test_poison_messages_are_quarantined_and_the_counts_reconcile(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    messages = _readings(stream, 1, 10)
    messages[3] = (f"{stream}.fleet", b"not json at all")
    messages[7] = (f"{stream}.fleet", b"\xff\xfe broken")
    _publish(NATS, stream, messages)
    defs = _defs(tmp_path, stream, batch={"records": 10})
    (key,) = requested_keys(_tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert [r[0] for r in warehouse.query("select id from iot.readings order by id")] == [
        1, 2, 3, 5, 6, 7, 9, 10,
    ]  # fmt: skip
    quarantined = warehouse.query(
        "select file, reason, raw_value from iot._quarantine order by file"
    )
    assert quarantined == [
        (f"{stream}:4", "invalid JSON: Expecting value at line 1 column 1", "not json at all"),
        (f"{stream}:8", "not UTF-8 text: invalid start byte at byte 0", "\\xff\\xfe broken"),
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_quarantined"].value == 2
    assert checks["rows_reconcile"].metadata["rows_landed"].value == 8


def test_a_message_over_max_record_bytes_is_quarantined_whole(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    messages = _readings(stream, 1, 4)
    big = json.dumps({"id": 3, "sensor": "s3", "celsius": 0.3, "note": "x" * 80}).encode()
    messages[2] = (f"{stream}.fleet", big)
    _publish(NATS, stream, messages)
    defs = _defs(tmp_path, stream, batch={"records": 4}, max_record_bytes=100)
    (key,) = requested_keys(_tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.query("select id from iot.readings order by id") == [(1,), (2,), (4,)]
    assert warehouse.query("select file, reason, raw_value from iot._quarantine") == [
        (f"{stream}:3", f"record of {len(big)} bytes is over max_record_bytes (100)", big.decode())
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_quarantined"].value == 1


def test_a_subject_filter_lands_only_its_subject(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    mixed = []
    for n in range(1, 101):
        mixed += _readings(stream, n, 1, subject="truck" if n % 2 else "ship")
    _publish(NATS, stream, mixed)
    defs = _defs(tmp_path, stream, subject=f"{stream}.truck", batch={"records": 50})
    (key,) = requested_keys(_tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    rows = warehouse.query("select id, _partition_key from iot.readings order by id")
    assert rows == [(n, f"{stream}.truck") for n in range(1, 101, 2)]


def test_a_range_read_is_exact_at_both_ends_filtered_empty_and_large(stream: str) -> None:
    """The ordered consumer's read: messages past `hi` ignored, an empty filtered range."""
    mixed = [(f"{stream}.ship", b'{"id": 0}')]
    mixed += _readings(stream, 1, 20_000, subject="truck")
    mixed += [(f"{stream}.ship", b'{"id": -1}')]
    _publish(NATS, stream, mixed)
    everything = JetStreamSettings(NATS, stream, timeout_seconds=2)
    middle = read_range(everything, 5, 12)
    assert middle.sequences == list(range(6, 13))
    assert [json.loads(data)["id"] for data in middle.payloads] == list(range(5, 12))
    assert set(middle.subjects) == {f"{stream}.truck"}
    assert middle.times_ms.to_pylist() == sorted(middle.times_ms.to_pylist())
    assert middle.times_ms[0].as_py() > time.time() * 1000 - 120_000
    # 20,000 messages past the first, in order, each once (flow control on the way).
    assert read_range(everything, 1, 20_001).sequences == list(range(2, 20_002))
    ships = JetStreamSettings(NATS, stream, subject=f"{stream}.ship", timeout_seconds=2)
    assert len(read_range(ships, 1, 20_001)) == 0  # the next ship is past the range
    assert read_range(ships, 0, 20_002).payloads == [b'{"id": 0}', b'{"id": -1}']
    # No delivery at all: after `timeout_seconds` the consumer's count says none match.
    nothing = JetStreamSettings(NATS, stream, subject=f"{stream}.plane", timeout_seconds=1)
    assert len(read_range(nothing, 0, 20_002)) == 0


def test_a_range_retention_dropped_fails_naming_it_and_leaves_the_table_as_it_was(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    _publish(NATS, stream, _readings(stream, 1, 100))
    defs = _defs(tmp_path, stream)
    (key,) = requested_keys(_tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)

    async def purge() -> None:
        client = await nats.connect(NATS)
        await client.jetstream().purge_stream(stream)
        await client.close()

    asyncio.run(purge())
    result = materialize(
        defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
    )
    assert not result.success
    assert (
        f"stream {stream!r} now starts at sequence 101: messages 1..100 of this slice were "
        "dropped by its retention" in failure_message(result)
    )
    assert warehouse.count("iot", "readings", batch=key) == 100


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    """A JetStream server of this test's own, asking for a token; restartable."""
    port, token = free_port(), "s3cr3t-" + uuid.uuid4().hex[:6]
    command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "--auth", token, "-js",
               "-sd", str(tmp_path / "jetstream")]  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _publish(f"nats://127.0.0.1:{port}", "PING", [], token=token)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise TimeoutError("nats-server did not start")

    def stop() -> None:
        processes[-1].send_signal(signal.SIGTERM)
        processes[-1].wait(timeout=10)

    start()
    yield f"nats://127.0.0.1:{port}", token, (start, stop)
    if processes[-1].poll() is None:
        stop()


def test_a_refused_token_and_a_stopped_broker_fail_clearly_and_a_restart_loses_nothing(
    tmp_path: Path,
    own_server: tuple[str, str, Any],
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, token, (start, stop) = own_server
    _publish(url, "FLEET", _readings("FLEET", 1, 100), token=token)
    monkeypatch.setenv("IOT_NATS_TOKEN", "wrong")
    defs = _defs(tmp_path, "FLEET", servers=url, token={"env": "IOT_NATS_TOKEN"})
    defs_file = tmp_path / "iot" / "defs.yaml"
    with pytest.raises(Exception, match="authorization violation") as refused:
        _tick(defs, instance)
    assert str(refused.value) == (
        f"source 'iot' ({defs_file}): cannot reach NATS at {url}: authorization violation "
        "(the token or user/password was refused). Fix: correct `token:` or "
        "`user:`/`password:` (or the environment variables they name)"
    )
    assert "wrong" not in str(refused.value)

    monkeypatch.setenv("IOT_NATS_TOKEN", token)
    stop()  # the broker goes away mid-stream
    with pytest.raises(Exception, match="cannot reach NATS") as down:
        _tick(defs, instance)
    assert str(down.value).startswith(f"source 'iot' ({defs_file}): cannot reach NATS at {url}: ")
    assert str(down.value).endswith(". Fix: start the server, or correct `servers:`")
    start()  # file storage: what was published before the restart is still there
    _publish(url, "FLEET", _readings("FLEET", 101, 50), token=token)
    (key,) = requested_keys(_tick(defs, instance))
    assert key == "..100"
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.query("select count(distinct id), min(id), max(id) from iot.readings") == [
        (100, 1, 100)
    ]


def test_the_lag_check_counts_messages_past_the_newest_cut_and_the_oldest_age(
    tmp_path: Path, stream: str, instance: dg.DagsterInstance
) -> None:
    _publish(NATS, stream, _readings(stream, 1, 130))
    defs = _defs(tmp_path, stream)
    assert requested_keys(_tick(defs, instance)) == ["..100"]
    (lag_sensor,) = [s for s in defs.sensors or [] if s.name == "iot__lag"]
    result = lag_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    (evaluation,) = [e for e in result.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    assert evaluation.metadata["waiting_messages"].value == 30
    assert 0 <= evaluation.metadata["oldest_waiting_seconds"].value < 120


def test_a_sequence_delivered_twice_is_read_once() -> None:
    """An ordered consumer that is reset may deliver a sequence again (a test double: a
    real server cannot be made to); the read keeps each once and stops at `hi`."""

    class Delivery:
        def __init__(self, sequence: int, pending: int) -> None:
            self.subject, self.data = "S.x", b'{"n": %d}' % sequence
            # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
            self.reply = f"$JS.ACK.S.c.1.{sequence}.{sequence}.{sequence * 10**6}.{pending}"

    class Subscription:
        async def unsubscribe(self) -> None:
            pass

    class Stream:
        async def subscribe(self, *_: Any, cb: Any, **__: Any) -> Subscription:
            async def deliver() -> None:
                for sequence in (3, 4, 4, 5, 3, 6, 7):
                    await cb(Delivery(sequence, 10 - sequence))

            asyncio.get_running_loop().create_task(deliver())
            return Subscription()

    settings = JetStreamSettings(NATS, "S", timeout_seconds=2)
    read = asyncio.run(_read_ordered(Stream(), settings, 2, 6))
    assert read.sequences == [3, 4, 5, 6]
    assert read.times_ms.to_pylist() == [3, 4, 5, 6]
