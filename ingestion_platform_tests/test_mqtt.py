"""MQTT sources on real brokers: the machine's Mosquitto (127.0.0.1:1883), RabbitMQ's MQTT
plugin (127.0.0.1:1884, a second implementation, which holds only 10 messages in flight) and,
for restarts and credentials, a Mosquitto the test starts itself. Land-then-ack: kill -9
between the commit and the acknowledgement, and every message still lands once."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic
import pytest
from paho.mqtt import publish

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.mqtt.component import MqttSource
from ingestion_platform.sources.mqtt.connectors.mqtt import (
    MqttMessage,
    MqttSettings,
    MqttUnreachable,
    _take,
    drain,
)
from ingestion_platform_tests.brokers import start_mosquitto
from ingestion_platform_tests.e2e.dagster_dev import free_port
from ingestion_platform_tests.sources import (
    build_source,
    materialize,
    requested_keys,
    tick_size_sensor,
)

# The machine's brokers (`make services`): port by name.
BROKERS = {"mosquitto": 1883, "rabbitmq": 1884}
BOTH_BROKERS = pytest.mark.parametrize("broker", list(BROKERS))


@pytest.fixture
def fleet(warehouse_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A topic prefix of this test's own; the sensor finds the warehouse as a deployment does."""
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))
    return f"fleet-{uuid.uuid4().hex[:8]}"


def _send(prefix: str, first: int, count: int, port: int = 1883, **auth: Any) -> None:
    messages = [
        {
            "topic": f"{prefix}/truck{n % 3}/temp",
            "payload": json.dumps({"message_id": n, "id": n, "celsius": n / 10}),
            "qos": 1,
        }
        for n in range(first, first + count)
    ]
    publish.multiple(messages, hostname="127.0.0.1", port=port, **auth)


@pytest.fixture
def broker() -> str:
    """The broker a test runs against; `BOTH_BROKERS` runs it against each."""
    return "mosquitto"


@pytest.fixture
def port(broker: str) -> int:
    return BROKERS[broker]


def _defs(tmp_path: Path, prefix: str, **attributes: Any) -> dg.Definitions:
    base = {
        "topics": [f"{prefix}/+/temp"],
        "client_id": f"test-{prefix}",
        "table": "readings",
        "batch": {"records": 100},
        "drain_seconds": 5,
    }
    return build_source(MqttSource, tmp_path / "iot", {**base, **attributes})


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    return tick_size_sensor(defs, instance, "iot__size_sensor")


@BOTH_BROKERS
def test_messages_are_buffered_then_acknowledged_and_each_range_lands_once(
    tmp_path: Path,
    fleet: str,
    port: int,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources,
) -> None:
    defs = _defs(tmp_path, fleet, port=port)
    assert (
        requested_keys(_tick(defs, instance)) == []
    )  # subscribes: the broker now keeps our session
    _send(fleet, 1, 250, port=port)
    publish.single(f"{fleet}/truck1/humidity", "{}", qos=1, hostname="127.0.0.1", port=port)
    assert requested_keys(_tick(defs, instance)) == ["..200"]
    materialize(defs, partition_key="..200", resources=resources, instance=instance)
    materialize(defs, partition_key="..200", resources=resources, instance=instance)  # replay
    assert warehouse.query("select count(*), count(distinct id) from iot.readings") == [(200, 200)]
    # Acknowledged: a new tick gets nothing again from the broker; 50 wait in the buffer.
    _send(fleet, 251, 50, port=port)
    assert requested_keys(_tick(defs, instance)) == ["200..300"]
    materialize(defs, partition_key="200..300", resources=resources, instance=instance)
    assert warehouse.query(
        "select count(*), count(distinct id), min(id), max(id), "
        "count(distinct _partition_key) from iot.readings"
    ) == [(300, 300, 1, 300, 3)]
    assert warehouse.query("select count(*) from iot._buffer") == [(300,)]


KILLED_DRAIN = """
import os, signal, sys
from ingestion_platform.core import message_buffer
from ingestion_platform.core.declaration import DeclarationError
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.mqtt.connectors.mqtt import MqttSettings, drain
warehouse = Warehouse(sys.argv[1])
def commit(messages):
    message_buffer.append(warehouse, "iot", [message_buffer.BufferedMessage(
        m.message_id, m.topic, m.payload, m.arrived_ms) for m in messages])
    os.kill(os.getpid(), signal.SIGKILL)  # committed, never acknowledged
drain(MqttSettings("127.0.0.1", int(sys.argv[3]), [sys.argv[2] + "/+/temp"], "test-" + sys.argv[2]),
      commit)
"""


@BOTH_BROKERS
def test_a_drain_killed_between_commit_and_ack_lands_every_message_once(
    tmp_path: Path,
    fleet: str,
    port: int,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    warehouse_path: Path,
    resources,
) -> None:
    defs = _defs(tmp_path, fleet, port=port)
    _tick(defs, instance)  # the session
    _send(fleet, 1, 30, port=port)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRAIN, str(warehouse_path), fleet, str(port)],
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    committed = warehouse.query("select count(*) from iot._buffer")[0][0]
    assert 0 < committed <= 20  # one batch committed before the process died
    # The broker delivers the unacknowledged messages again; their ids keep them single.
    assert requested_keys(_tick(defs, instance)) == []  # 30 buffered: below 100, nothing to cut yet
    assert warehouse.query("select count(*), count(distinct message_id) from iot._buffer") == [
        (30, 30)
    ]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[int, Any, Any]]:
    """A Mosquitto of this test's own with persistence and a password; restartable."""
    port = free_port()
    passwords = tmp_path / "passwords"
    subprocess.run(["/usr/bin/mosquitto_passwd", "-b", "-c", str(passwords), "fleet", "s3cr3t"],
                   check=True, capture_output=True)  # fmt: skip
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 1\n"
        # Run as root (the suite is), it would switch to the `mosquitto` user, who cannot
        # write the persistence file into this test's folder.
        "user root\n"
    )
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(start_mosquitto(config, port))

    def stop() -> None:
        processes[-1].send_signal(signal.SIGTERM)  # saves the persistent sessions
        processes[-1].wait(timeout=10)

    start()
    yield port, start, stop
    if processes[-1].poll() is None:
        stop()


def test_refused_credentials_a_stopped_broker_and_a_restart_lose_nothing(
    tmp_path: Path,
    fleet: str,
    own_broker: tuple[int, Any, Any],
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, start, stop = own_broker
    monkeypatch.setenv("FLEET_MQTT_PASSWORD", "wrong")
    defs = _defs(tmp_path, fleet, port=port, username="fleet",
                 password={"env": "FLEET_MQTT_PASSWORD"})  # fmt: skip
    defs_file = tmp_path / "iot" / "defs.yaml"
    with pytest.raises(Exception, match="refused the connection") as refused:
        _tick(defs, instance)
    assert str(refused.value) == (
        f"source 'iot' ({defs_file}): MQTT broker 127.0.0.1:{port} refused the connection: "
        "Not authorized. Fix: correct `username:` and `password:` (or the environment "
        "variables they name)"
    )
    monkeypatch.setenv("FLEET_MQTT_PASSWORD", "s3cr3t")
    _tick(defs, instance)  # the session
    auth = {"auth": {"username": "fleet", "password": "s3cr3t"}}
    _send(fleet, 1, 40, port=port, **auth)
    stop()
    with pytest.raises(Exception, match="cannot reach MQTT broker") as down:
        _tick(defs, instance)
    assert str(down.value) == (
        f"source 'iot' ({defs_file}): cannot reach MQTT broker 127.0.0.1:{port}: Connection "
        "refused. Fix: start the broker, or correct `host:` and `port:`"
    )
    start()  # the queued messages survived the restart in the broker's persistence file
    _send(fleet, 41, 60, port=port, **auth)
    assert requested_keys(_tick(defs, instance)) == ["..100"]
    assert warehouse.query("select count(distinct message_id) from iot._buffer") == [(100,)]


def test_a_port_that_does_not_speak_mqtt_is_named_once_the_timeout_passes() -> None:
    """A server that accepts the connection and never answers (a wrong `port:`, or a TLS
    listener) fails the tick after the timeout with the fix, instead of hanging it."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        settings = MqttSettings("127.0.0.1", port, ["x/#"], "silent-test", timeout_seconds=1)
        started = time.monotonic()
        with pytest.raises(MqttUnreachable) as unanswered:
            drain(settings, lambda messages: None)
    assert time.monotonic() - started < 5
    assert str(unanswered.value) == (
        f"MQTT broker 127.0.0.1:{port} did not answer the connect within 1s. Fix: check that "
        "`host:` and `port:` point at an MQTT broker (with `tls:` if it listens for TLS)"
    )


def test_poison_messages_are_quarantined_and_the_counts_reconcile(
    tmp_path: Path, fleet: str, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    defs = _defs(tmp_path, fleet, batch={"records": 10})
    _tick(defs, instance)
    _send(fleet, 1, 8)
    publish.multiple(
        [{"topic": f"{fleet}/truck9/temp", "payload": p, "qos": 1} for p in ("oops", b"\xff")],
        hostname="127.0.0.1",
    )
    (key,) = requested_keys(_tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.query("select count(*) from iot.readings") == [(8,)]
    assert sorted(r[0] for r in warehouse.query("select raw_value from iot._quarantine")) == [
        "\\xff",
        "oops",
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_quarantined"].value == 2


def test_a_broker_with_a_small_window_is_drained_window_by_window_without_waiting(
    tmp_path: Path, fleet: str, instance: dg.DagsterInstance
) -> None:
    """RabbitMQ sends 10 messages, then waits for their acknowledgement: each window is
    committed when the flow pauses, not after half a second of quiet, so one tick of
    `drain_seconds: 5` takes 600 messages (it took about 100: 10 every 0.5 s)."""
    port = BROKERS["rabbitmq"]
    defs = _defs(tmp_path, fleet, port=port, batch={"records": 600})
    _tick(defs, instance)  # the session
    _send(fleet, 1, 600, port=port)
    assert requested_keys(_tick(defs, instance)) == ["..600"]


def test_a_broker_that_allows_more_in_flight_gets_fewer_larger_commits(
    tmp_path: Path, fleet: str
) -> None:
    """Each window takes all that arrived: 3,000 messages in far fewer than 150 commits."""
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_inflight_messages 1000\nmax_queued_messages 10000\n"
    )
    broker = start_mosquitto(config, port)
    try:
        settings = MqttSettings("127.0.0.1", port, [f"{fleet}/+/temp"], f"test-{fleet}")
        drain(settings, lambda _m: None, max_seconds=0.5)  # the session subscribes
        _send(fleet, 1, 3_000, port=port)
        windows: list[list[Any]] = []
        assert drain(settings, windows.append, max_messages=5_000, max_seconds=30) == 3_000
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    ids = [json.loads(m.payload)["id"] for window in windows for m in window]
    assert sorted(ids) == list(range(1, 3_001))
    assert max(map(len, windows)) > 20
    assert len(windows) < 3_000 / 20


def test_a_stall_of_this_machine_is_not_taken_for_the_brokers_in_flight_cap() -> None:
    """Three messages, a stall (a busy machine), then a steady flow: each commit still waits
    for 20 messages. Learning 3 as the broker's cap made every later commit tiny."""
    received: list[MqttMessage] = []
    arrived = threading.Condition()

    class Broker:
        """Sends regardless of acknowledgements, as one allowing 1,000 in flight does."""

        def ack(self, mid: int, qos: int) -> None:
            pass

    def flow() -> None:
        for index in range(600):
            if index == 3:
                time.sleep(0.2)
            with arrived:
                received.append(MqttMessage(str(index), "t", b"{}", 0, index))
                arrived.notify_all()
            time.sleep(0.001)

    sender = threading.Thread(target=flow)
    sender.start()
    windows: list[list[MqttMessage]] = []
    taken = _take(Broker(), received, arrived, windows.append, 600, 30, 1.0, 20)  # type: ignore[arg-type]
    sender.join()
    assert taken == 600
    assert [len(window) for window in windows][0] == 3
    assert min(len(window) for window in windows[1:-1]) >= 20


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        # 0 would quarantine every message, each as "over max_record_bytes (0)".
        ("max_record_bytes", 0, "0 is not allowed. Fix: write a number above 0"),
        # A drain that never waits would leave every message to the broker, whose queue for
        # the session is bounded (Mosquitto's max_queued_messages): the rest would be dropped.
        ("drain_seconds", -1, "-1 is not allowed. Fix: write a number above 0"),
        # Written as text (as a `{{ template }}` resolves): checked once it is a number.
        ("drain_seconds", "0", "0 is not allowed. Fix: write a number above 0"),
        ("port", 70000, "70000 is not allowed. Fix: write a number of at most 65535"),
    ],
)
def test_a_number_mqtt_cannot_work_with_is_refused_naming_the_setting(
    setting: str, value: int | str, message: str, tmp_path: Path, fleet: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        _defs(tmp_path, fleet, **{setting: value})
    # Dagster also lists the `{{ template }}` alternative every setting allows (`.str`).
    found = [(str(e["loc"][0]).split(".")[0], e["msg"]) for e in error.value.errors()]
    assert found[0] == (setting, f"Value error, {message}")
