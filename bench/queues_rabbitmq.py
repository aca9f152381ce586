"""Benchmark: RabbitMQ's landing against a plain client loop, on the machine's RabbitMQ.

For each message count, rounds alternate (plain, platform, plain, ...), medians reported:

  stream  plain: rstream (the fastest reader measured, the platform's own client) reads the
          stream from offset 0, writes the bodies as JSON Lines and DuckDB `read_json`
          creates the table; platform: one partition's run (`sources/rabbitmq/run.
          land_stream_range`: the exact offset range read, decoded, landed in one
          transaction with the quarantine). The stream is filled once (it is replayable).
  queue   plain: a pika consumer (prefetch 1000, acknowledging every 1,000) collects the
          bodies, then the same JSON Lines load; platform: the land-then-ack drain into
          the buffer (commit each prefetch window, then acknowledge it) plus the landing
          of that buffer range. Each round fills a fresh queue (not timed).

Messages are published over AMQP 0.9.1 (pika), as most producers do, so a stream holds
AMQP 1.0 envelopes. Then put → landed latency at a 500-message cut for each: 500 messages
published one by one (2 ms apart), then the sensor's measure (stream) or drain (queue)
and the partition's landing; each message's latency is the landing's commit minus its
publish time. `clients` first compares the candidate clients on the same messages.

    .venv/bin/python bench/queues_rabbitmq.py --counts 20000 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pika

from ingestion_platform.core import message_buffer
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.message_landing import MessageDecoding
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.mqtt.run import land_buffer_range
from ingestion_platform.sources.rabbitmq.component import RabbitMqSource
from ingestion_platform.sources.rabbitmq.connectors import amqp_queue, amqp_stream
from ingestion_platform.sources.rabbitmq.run import land_stream_range

SOURCE = SourceContext("bench", "bench/defs.yaml")
# The RabbitMQ source's default `prefetch`.
PREFETCH = RabbitMqSource.model_fields["prefetch"].default
AMQP = amqp_queue.AmqpSettings("127.0.0.1", 5672, "/", "guest", "guest")


def _stream_settings(stream: str) -> amqp_stream.StreamSettings:
    return amqp_stream.StreamSettings("127.0.0.1", 5552, "/", "guest", "guest", stream)


def _payload(n: int) -> bytes:
    return json.dumps({"id": n, "device": f"dev{n % 50}", "celsius": n / 100}).encode()


def _channel() -> tuple[pika.BlockingConnection, Any]:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    return connection, connection.channel()


def _fill(name: str, count: int, stream: bool) -> None:
    if stream:
        asyncio.run(_fill_stream(name, count))
        return
    connection, channel = _channel()
    declared = channel.queue_declare(name, durable=True)
    for n in range(count):
        properties = pika.BasicProperties(message_id=str(n), delivery_mode=2)
        channel.basic_publish("", name, _payload(n), properties)
    while declared.method.message_count < count:  # stored, ready for a consumer
        time.sleep(0.05)
        declared = channel.queue_declare(name, passive=True)
    connection.close()


async def _fill_stream(name: str, count: int) -> None:
    # A producer that batches, as a busy one does: a chunk per 100 messages, each an AMQP
    # 1.0 message as the stream clients of other languages write them.
    from rstream import AMQPMessage, Producer

    async with Producer("127.0.0.1", 5552, username="guest", password="guest") as producer:
        await producer.create_stream(name, exists_ok=True)
        for start in range(0, count, 100):
            await producer.send_batch(name, [
                AMQPMessage(body=_payload(n)) for n in range(start, min(count, start + 100))
            ])  # fmt: skip


def _drop(name: str) -> None:
    connection, channel = _channel()
    channel.queue_delete(name)
    connection.close()


def _load_jsonl(payloads: list[bytes], work: Path) -> None:
    lines = work / f"plain-{uuid.uuid4().hex}.jsonl"
    lines.write_bytes(b"\n".join(payloads))
    with duckdb.connect(str(work / f"plain-{uuid.uuid4().hex}.duckdb")) as connection:
        connection.execute(f"create table t as select * from read_json('{lines}')")  # noqa: S608


def _warehouse(work: Path) -> Warehouse:
    return Warehouse(str(work / f"p-{uuid.uuid4().hex}.duckdb"))


def plain_stream(stream: str, count: int, work: Path) -> None:
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, amqp_decoder

    async def read() -> list[bytes]:
        bodies: list[bytes] = []
        done = asyncio.Event()

        def on_message(message: Any, _context: Any) -> None:
            body = amqp_decoder(bytes(message)).body
            bodies.append(b"".join(body) if isinstance(body, list) else body)
            if len(bodies) == count:
                done.set()

        async with Consumer("127.0.0.1", 5552, username="guest", password="guest") as consumer:
            await consumer.start()
            first = ConsumerOffsetSpecification(OffsetType.FIRST, None)
            await consumer.subscribe(stream, on_message, offset_specification=first,
                                     initial_credit=amqp_stream.CREDIT)  # fmt: skip
            await asyncio.wait_for(done.wait(), 600)
        return bodies

    _load_jsonl(asyncio.run(read()), work)


def platform_stream(stream: str, count: int, work: Path) -> None:
    land_stream_range(_stream_settings(stream), MessageDecoding("json", 1_048_576, {}), SOURCE,
                      _warehouse(work), "readings", f"..{count}", 0, count)  # fmt: skip


def plain_queue(queue: str, count: int, work: Path) -> None:
    connection, channel = _channel()
    channel.basic_qos(prefetch_count=1000)
    bodies: list[bytes] = []
    for method, _properties, body in channel.consume(queue, inactivity_timeout=5):
        if method is None:
            break
        bodies.append(body)
        if len(bodies) % 1000 == 0 or len(bodies) == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if len(bodies) == count:
            break
    connection.close()
    _load_jsonl(bodies, work)


def platform_queue(queue: str, count: int, work: Path) -> None:
    warehouse = _warehouse(work)
    _drain_and_land(warehouse, queue, count)


def _drain_and_land(warehouse: Warehouse, queue: str, count: int) -> None:
    def commit(messages: list[amqp_queue.QueuedMessage]) -> None:
        message_buffer.append(warehouse, "bench", [
            message_buffer.BufferedMessage(m.message_id, m.routing_key, m.body, m.arrived_ms)
            for m in messages])  # fmt: skip

    amqp_queue.drain(AMQP, queue, commit, prefetch=PREFETCH, max_messages=count, max_seconds=900)
    land_buffer_range(warehouse, "bench", "readings", f"..{count}", 0, count, "json",
                      1_048_576, {})  # fmt: skip


def _timed(action: Callable[..., None], *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def clients(count: int) -> None:
    """The candidate clients on the same messages: what chose pika and rstream."""
    import aio_pika
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType

    async def aio_pika_drain(queue: str) -> None:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        got = 0
        async with declared.iterator() as messages:
            async for message in messages:
                got += 1
                if got % 1000 == 0 or got == count:
                    await message.ack(multiple=True)
                if got == count:
                    break
        await connection.close()

    def pika_drain(queue: str) -> None:
        connection, channel = _channel()
        channel.basic_qos(prefetch_count=1000)
        for got, (method, _p, _b) in enumerate(channel.consume(queue), start=1):
            if got % 1000 == 0 or got == count:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if got == count:
                break
        connection.close()

    def pika_stream(stream: str) -> None:  # through an AMQP 0.9.1 consumer
        connection, channel = _channel()
        channel.basic_qos(prefetch_count=1000)
        arguments = {"x-stream-offset": "first"}
        for got, (method, _p, _b) in enumerate(channel.consume(stream, arguments=arguments), 1):
            if got % 1000 == 0 or got == count:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if got == count:
                break
        connection.close()

    async def rstream_read(stream: str) -> None:
        done = asyncio.Event()
        got = 0

        def on_message(_message: Any, _context: Any) -> None:
            nonlocal got
            got += 1
            if got == count:
                done.set()

        async with Consumer("127.0.0.1", 5552, username="guest", password="guest") as consumer:
            await consumer.start()
            first = ConsumerOffsetSpecification(OffsetType.FIRST, None)
            await consumer.subscribe(stream, on_message, offset_specification=first,
                                     initial_credit=amqp_stream.CREDIT)  # fmt: skip
            await asyncio.wait_for(done.wait(), 600)

    for name, action in (("pika", pika_drain),
                         ("aio-pika", lambda q: asyncio.run(aio_pika_drain(q)))):  # fmt: skip
        queue = f"bench-c-{uuid.uuid4().hex[:6]}"
        _fill(queue, count, stream=False)
        print(f"  queue drain {count:,} with {name}: {_timed(action, queue):.2f} s")
        _drop(queue)
    stream = f"bench-c-{uuid.uuid4().hex[:6]}"
    _fill(stream, count, stream=True)
    for name, action in (("pika (AMQP 0.9.1)", pika_stream),
                         ("rstream", lambda s: asyncio.run(rstream_read(s)))):  # fmt: skip
        print(f"  stream read {count:,} with {name}: {_timed(action, stream):.2f} s")
    _drop(stream)


def latency_at_a_cut(work: Path, stream: bool, size: int = 500) -> tuple[float, float]:
    name = f"bench-lat-{uuid.uuid4().hex[:6]}"
    connection, channel = _channel()
    channel.queue_declare(name, durable=True,
                          arguments={"x-queue-type": "stream"} if stream else None)  # fmt: skip
    channel.confirm_delivery()
    put_at: list[float] = []
    for n in range(size):
        channel.basic_publish("", name, _payload(n), pika.BasicProperties(message_id=str(n)))
        put_at.append(time.time())
        time.sleep(0.002)
    connection.close()
    warehouse = _warehouse(work)
    if stream:
        newest = amqp_stream.span(_stream_settings(name), None).newest  # the sensor's measure
        land_stream_range(_stream_settings(name), MessageDecoding("json", 1_048_576, {}), SOURCE,
                          warehouse, "readings", f"..{newest}", 0, newest)  # fmt: skip
    else:
        _drain_and_land(warehouse, name, size)
    landed = time.time()
    _drop(name)
    latencies = sorted(landed - put for put in put_at)
    return statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]


def run(counts: list[int], rounds: int, work: Path) -> None:
    """The RabbitMQ figures: stream and queue at each count, then latency at a cut."""
    for count in counts:
        stream = f"bench-s-{uuid.uuid4().hex[:6]}"
        _fill(stream, count, stream=True)
        plain, platform = [], []
        for _ in range(rounds):
            plain.append(_timed(plain_stream, stream, count, work))
            platform.append(_timed(platform_stream, stream, count, work))
        _drop(stream)
        _report("RabbitMQ stream", count, plain, platform)
        plain, platform = [], []
        for _ in range(rounds):
            for runner, times in ((plain_queue, plain), (platform_queue, platform)):
                queue = f"bench-q-{uuid.uuid4().hex[:6]}"
                _fill(queue, count, stream=False)
                times.append(_timed(runner, queue, count, work))
                _drop(queue)
        _report("RabbitMQ queue ", count, plain, platform)
    for kind, stream in (("stream", True), ("queue ", False)):
        p50, p95 = latency_at_a_cut(work, stream)
        print(f"RabbitMQ {kind} put → landed at a 500-message cut: p50 {p50:.2f} s, "
              f"p95 {p95:.2f} s (the sensor's measure or drain and the landing)")  # fmt: skip


def _report(what: str, count: int, plain: list[float], platform: list[float]) -> None:
    a, b = statistics.median(plain), statistics.median(platform)
    print(f"{what} {count:>7,}: plain {a:6.2f} s, platform {b:6.2f} s, platform speed "
          f"{a / b:.2f}x (target >= 0.9); rounds plain {_list(plain)}, platform "
          f"{_list(platform)}")  # fmt: skip


def _list(times: list[float]) -> str:
    return "/".join(f"{t:.2f}" for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50_000,
                        help="messages for the client comparison (0: skip it)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="bench-rabbitmq-"))
    print(f"load average at start: {os.getloadavg()}")
    if args.clients:
        clients(args.clients)
    run(args.counts, args.rounds, work)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
