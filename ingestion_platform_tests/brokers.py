"""The machine's message brokers, for the queue tests: names of a test's own, publishing,
and a TCP proxy a test can cut to break a live connection without touching the broker.

The brokers are system services shared by everything on the machine (RabbitMQ on 5672 and
its stream port 5552), so tests never restart them: every test uses queues and streams
named after itself, deletes them afterwards, and cuts connections at its own proxy. A
broker that is not running fails the test (`make services` starts it); it never skips.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPConnectionError

RABBITMQ = ("127.0.0.1", 5672)
RABBITMQ_STREAMS = ("127.0.0.1", 5552)
MOSQUITTO = "/usr/sbin/mosquitto"


def start_mosquitto(config: Path, port: int) -> subprocess.Popen[bytes]:
    """A Mosquitto of the test's own, from `config`, once it accepts on `port`."""
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise TimeoutError("mosquitto did not start")


@contextmanager
def rabbitmq_channel() -> Iterator[Any]:
    """A channel on the machine's RabbitMQ (guest), with publisher confirms."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters(*RABBITMQ))
    except AMQPConnectionError as error:
        pytest.fail(f"RabbitMQ is not running on {RABBITMQ}: {error!r}. Run `make services`.")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        connection.close()


class RabbitNames:
    """Queues and streams of one test, deleted when it ends."""

    def __init__(self) -> None:
        self.prefix = f"t-{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def queue(self, suffix: str = "q", **arguments: Any) -> str:
        name = f"{self.prefix}-{suffix}"
        with rabbitmq_channel() as channel:
            channel.queue_declare(name, durable=True, arguments=arguments or None)
        self.made.append(name)
        return name

    def stream(self, suffix: str = "s", **arguments: Any) -> str:
        return self.queue(suffix, **{"x-queue-type": "stream", **arguments})

    def delete_all(self) -> None:
        with rabbitmq_channel() as channel:
            for name in self.made:
                channel.queue_delete(name)


@contextmanager
def rabbit_names() -> Iterator[RabbitNames]:
    """Names of a test's own on the machine's RabbitMQ (streams need its stream plugin)."""
    with socket.socket() as probe:
        if probe.connect_ex(RABBITMQ_STREAMS) != 0:
            pytest.fail(
                f"RabbitMQ streams are not listening on {RABBITMQ_STREAMS}: run `make services` "
                "(it enables the rabbitmq_stream plugin)"
            )
    names = RabbitNames()
    yield names
    names.delete_all()


def publish(
    name: str,
    bodies: list[bytes],
    *,
    message_ids: list[str] | None = None,
    exchange: str = "",
    routing_keys: list[str] | None = None,
) -> None:
    """Publish `bodies` (to the queue `name`, or through `exchange`), confirmed by the broker."""
    with rabbitmq_channel() as channel:
        for index, body in enumerate(bodies):
            properties = pika.BasicProperties(
                delivery_mode=2, message_id=message_ids[index] if message_ids else None
            )
            key = routing_keys[index] if routing_keys else name
            channel.basic_publish(exchange, key, body, properties)


def queue_depth(name: str) -> int:
    with rabbitmq_channel() as channel:
        return channel.queue_declare(name, passive=True).method.message_count


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; `cut()` resets every live connection and
    every new one until `restore()`, as a broker restart or a broken link does. With
    `cut_after`, it cuts by itself once that many bytes went to the clients."""

    def __init__(self, upstream: tuple[str, int], cut_after: int | None = None) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.forwarded = 0
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttableProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._thread.join()
        self._listener.close()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for client in self._live:
                _reset(client)
            self._live.clear()

    def restore(self) -> None:
        self.cut_after = None
        self._cut.clear()

    def _count(self, sent: int) -> None:
        with self._lock:
            self.forwarded += sent
            due = self.cut_after is not None and self.forwarded >= self.cut_after
        if due:
            threading.Thread(target=self.cut, daemon=True).start()  # not from a live one

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self._cut.is_set():
                _reset(client)
                continue
            with self._lock:
                self._live.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        try:
            while not self._stopped.is_set() and not self._cut.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for side, other in ((client, upstream), (upstream, client)):
                    if side in readable:
                        if not (data := side.recv(65536)):
                            return
                        other.sendall(data)
                        if other is client:
                            self._count(len(data))
        except OSError:
            pass  # cut, or one side went away
        finally:
            _reset(client)
            _reset(upstream)


def _reset(connection: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the peer reads ECONNRESET, as on a dropped link."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    except OSError:
        pass
