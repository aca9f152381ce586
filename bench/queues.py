"""Benchmark: the queue sources' landing against a plain client loop, on the machine's brokers.

For each broker and message count, rounds alternate, medians reported, with the load:

  JetStream  plain: an ordered push consumer's callback collects the messages, which are
             written as JSON Lines and DuckDB `read_json` creates the table; platform:
             the run's own work for one partition (`sources/nats/run.land_range`: the
             exact range read through an ephemeral ordered consumer, decoded, landed in
             one transaction with the quarantine).
  MQTT       plain: a QoS 1 subscriber with automatic acknowledgement collects the messages,
             then the same JSON Lines load; platform: the land-then-ack drain into the
             buffer (commit, then acknowledge, in batches of the broker's in-flight
             window) plus the landing of that buffer range.

MQTT runs on a Mosquitto of the bench's own, once at Mosquitto's default in-flight window
(20 unacknowledged messages per client) and once at 1,000, with no cap on the messages it
queues for a session that is away, then on RabbitMQ's MQTT plugin (`--mqtt-rabbitmq-port`,
10 in flight): the messages are published first (untimed), then the
plain subscriber and the platform's drain each take a topic's worth. Then put → landed
latency at a 500-message cut for JetStream: 500 messages published one by one, the
partition landed as soon as the last is stored; each message's latency is its landing's
commit time minus its publish time.

    .venv/bin/python bench/queues.py --counts 20000 200000 --mqtt-counts 20000 \
        --rabbitmq-counts 20000 200000

RabbitMQ's part (a stream and a classic queue) is bench/queues_rabbitmq.py, also runnable
on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import duckdb
import nats
import paho.mqtt.client as mqtt
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from paho.mqtt import publish

from bench.queues_rabbitmq import run as rabbitmq
from ingestion_platform.core import message_buffer
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.message_landing import MessageDecoding
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.mqtt.connectors.mqtt import MqttSettings, drain
from ingestion_platform.sources.mqtt.run import land_buffer_range
from ingestion_platform.sources.nats.connectors.jetstream import JetStreamSettings
from ingestion_platform.sources.nats.run import land_range

NATS = "nats://127.0.0.1:4222"
SOURCE = SourceContext("bench", "bench/defs.yaml")


def _payload(n: int) -> bytes:
    return json.dumps({"message_id": n, "device": f"dev{n % 50}", "celsius": n / 100}).encode()


async def _fill_stream(stream: str, count: int) -> None:
    client = await nats.connect(NATS)
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                js.publish(f"{stream}.r", _payload(n))
                for n in range(start, min(count, start + 1000))
            )
        )
    await client.close()


async def _drop_stream(stream: str) -> None:
    client = await nats.connect(NATS)
    await client.jetstream().delete_stream(stream)
    await client.close()


def _load_jsonl(payloads: list[bytes], work: Path) -> None:
    lines = work / f"plain-{uuid.uuid4().hex}.jsonl"
    lines.write_bytes(b"\n".join(payloads))
    with duckdb.connect(str(work / f"plain-{uuid.uuid4().hex}.duckdb")) as connection:
        connection.execute(f"create table t as select * from read_json('{lines}')")  # noqa: S608


def plain_jetstream(stream: str, count: int, work: Path) -> None:
    async def read() -> list[bytes]:
        # The client at its best: a callback on an ordered push consumer (a pull `fetch`
        # awaits each message with a timer task and took 6-13x as long for 200,000).
        client = await nats.connect(NATS)
        payloads: list[bytes] = []
        done = asyncio.Event()

        async def collect(message: Msg) -> None:
            payloads.append(message.data)
            if len(payloads) == count:
                done.set()

        subscription = await client.jetstream().subscribe(
            "", stream=stream, cb=collect, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )  # fmt: skip
        await done.wait()
        await subscription.unsubscribe()
        await client.close()
        return payloads

    _load_jsonl(asyncio.run(read()), work)


def platform_jetstream(stream: str, count: int, work: Path) -> None:
    warehouse = Warehouse(str(work / f"p-{uuid.uuid4().hex}.duckdb"))
    land_range(JetStreamSettings(NATS, stream), MessageDecoding("json", 1_048_576, {}), SOURCE,
               warehouse, "readings", f"..{count}", 0, count)  # fmt: skip


def _own_mosquitto(work: Path, inflight: int) -> tuple[int, subprocess.Popen[bytes]]:
    """A Mosquitto of the bench's own that lets `inflight` messages be unacknowledged."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = work / f"mosquitto-{port}.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"max_inflight_messages {inflight}\nmax_queued_messages 1000000\n"
    )
    process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(config)],
                               stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return port, process
        time.sleep(0.05)
    raise TimeoutError("mosquitto did not start")


def _fill_mqtt(port: int, topic: str, count: int) -> None:
    for start in range(0, count, 1000):
        publish.multiple(
            [{"topic": topic, "payload": _payload(n), "qos": 1}
             for n in range(start, min(count, start + 1000))],
            hostname="127.0.0.1", port=port,
        )  # fmt: skip


def _session(port: int, client_id: str, topic: str) -> None:
    drain(MqttSettings("127.0.0.1", port, [topic], client_id), lambda _m: None, max_seconds=1)


def plain_mqtt(port: int, client_id: str, topic: str, count: int, work: Path) -> None:
    payloads: list[bytes] = []
    done = threading.Event()

    def on_message(_c: mqtt.Client, _d: object, message: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(message.payload))
        if len(payloads) >= count:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)  # fmt: skip
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(timeout=600)
    client.loop_stop()
    client.disconnect()
    _load_jsonl(payloads, work)


def platform_mqtt(port: int, client_id: str, topic: str, count: int, work: Path) -> None:
    warehouse = Warehouse(str(work / f"p-{uuid.uuid4().hex}.duckdb"))

    def commit(messages: list) -> None:
        message_buffer.append(warehouse, "bench", [
            message_buffer.BufferedMessage(m.message_id, m.topic, m.payload, m.arrived_ms)
            for m in messages])  # fmt: skip

    settings = MqttSettings("127.0.0.1", port, [topic], client_id)
    drained, deadline = 0, time.monotonic() + 600
    while drained < count and time.monotonic() < deadline:  # a drain stops when idle
        drained += drain(settings, commit, max_messages=count - drained, max_seconds=900,
                         idle_seconds=2)  # fmt: skip
    land_buffer_range(warehouse, "bench", "readings", f"..{count}", 0, count, "json",
                      1_048_576, {})  # fmt: skip


def mqtt_rounds(port: int, label: str, counts: list[int], rounds: int, work: Path) -> None:
    """Plain subscriber and platform drain, alternating, on the broker at `port`."""
    for count in counts:
        plain, platform = [], []
        for _ in range(rounds):
            topic = f"bench/{uuid.uuid4().hex[:8]}"
            for name, runner, times in (
                ("p", plain_mqtt, plain), ("q", platform_mqtt, platform)
            ):  # fmt: skip
                client_id = f"bench-{name}-{topic.split('/')[1]}"
                _session(port, client_id, topic)
                # Published to the session while it is away (untimed): the broker queues
                # them all, so the drain alone is timed.
                _fill_mqtt(port, topic, count)
                times.append(_timed(runner, port, client_id, topic, count, work))
        a, b = statistics.median(plain), statistics.median(platform)
        print(f"MQTT      {count:>7,} ({label}): plain {a:6.2f} s, platform "
              f"{b:6.2f} s, platform speed {a / b:.2f}x (target >= 0.9)")  # fmt: skip


def latency_at_a_cut(work: Path, size: int = 500) -> tuple[float, float]:
    stream = f"LAT{uuid.uuid4().hex[:6].upper()}"
    put_at: list[float] = []

    async def produce() -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for n in range(size):
            await js.publish(f"{stream}.r", _payload(n))
            put_at.append(time.time())
            await asyncio.sleep(0.002)
        await client.close()

    asyncio.run(produce())
    platform_jetstream(stream, size, work)
    landed = time.time()
    asyncio.run(_drop_stream(stream))
    latencies = sorted(landed - put for put in put_at)
    return statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]


def _timed(action, *args) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[20_000, 200_000])
    parser.add_argument("--mqtt-counts", type=int, nargs="*", default=[20_000])
    # Mosquitto's default is 20; the platform commits a window per in-flight window.
    parser.add_argument("--mqtt-inflight", type=int, nargs="+", default=[20, 1000])
    # RabbitMQ's MQTT plugin (`make services`: 127.0.0.1:1884, 10 in flight); 0 skips it.
    parser.add_argument("--mqtt-rabbitmq-port", type=int, default=1884)
    parser.add_argument("--rabbitmq-counts", type=int, nargs="*", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for count in args.counts:
        stream = f"BENCH{uuid.uuid4().hex[:6].upper()}"
        asyncio.run(_fill_stream(stream, count))
        plain, platform = [], []
        for _ in range(args.rounds):
            plain.append(_timed(plain_jetstream, stream, count, work))
            platform.append(_timed(platform_jetstream, stream, count, work))
        asyncio.run(_drop_stream(stream))
        a, b = statistics.median(plain), statistics.median(platform)
        print(f"JetStream {count:>7,}: plain {a:6.2f} s, platform {b:6.2f} s, "
              f"platform speed {a / b:.2f}x (target >= 0.9)")  # fmt: skip
    for inflight in args.mqtt_inflight if args.mqtt_counts else []:
        port, broker = _own_mosquitto(work, inflight)
        mqtt_rounds(port, f"in flight {inflight:,}", args.mqtt_counts, args.rounds, work)
        broker.terminate()
        broker.wait(timeout=10)
    if args.mqtt_rabbitmq_port and args.mqtt_counts:
        label = "RabbitMQ's MQTT plugin, 10 in flight"
        mqtt_rounds(args.mqtt_rabbitmq_port, label, args.mqtt_counts, args.rounds, work)
    p50, p95 = latency_at_a_cut(work)
    print(
        f"JetStream put → landed at a 500-message cut: p50 {p50:.2f} s, p95 {p95:.2f} s "
        "(the landing only; a sensor adds up to sensor_interval_seconds, a run its start-up)"
    )
    # RabbitMQ's stream and queue, and their latency at a cut (bench/queues_rabbitmq.py).
    rabbitmq(args.rabbitmq_counts, args.rounds, work)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
