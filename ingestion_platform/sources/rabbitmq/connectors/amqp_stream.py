"""A RabbitMQ stream as a replayable log: where it ends, and an exact range read by offset.

A stream keeps every message at an offset (0, 1, 2, ...) until its retention drops whole
segments from the start. A partition is a range of stream *positions* `(lo, hi]`, where a
message's position is its offset + 1, so it holds offsets `lo .. hi - 1` and the first
partition `..hi` starts at offset 0 like every cursor range. Reads go through the stream
protocol (rstream, port 5552; the `rabbitmq_stream` plugin): it reads as fast as an AMQP
0.9.1 consumer here, 2.3x as fast when producers batch (bench/queues_rabbitmq.py), and
unlike it gives each chunk's broker timestamp, which is the messages' arrival time and the
lag's age. A consumer here stores no offset on the server: the platform's partitions are
its bookmark.

Messages published over AMQP 0.9.1 or 1.0 (most clients) are stored as AMQP 1.0 messages;
their body is taken out of that envelope. Bytes a producer wrote without one (rstream's
`send(bytes)`) are taken as they are.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rstream import Consumer, ConsumerOffsetSpecification, OffsetType
from rstream.exceptions import (
    AuthenticationFailure,
    ServerError,
    StreamDoesNotExist,
    VirtualHostAccessFailure,
)

from ingestion_platform.sources.rabbitmq.connectors.amqp_queue import refused, unreachable

T = TypeVar("T")
# How long a read waits for the first chunk of a stream that may be empty.
EMPTY_WAIT_SECONDS = 1.0
# Chunks the broker may send ahead of the one being handled.
CREDIT = 32
# How often a read looks whether the stream has gone quiet.
CHECK_SECONDS = 0.05
# An AMQP 1.0 message starts with a described type (0x00 0x53 <descriptor>).
_AMQP_ENVELOPE = b"\x00\x53"


@dataclass(frozen=True)
class StreamSettings:
    """Where the stream is and how to sign in (secrets resolved, never logged)."""

    host: str
    port: int
    vhost: str
    username: str
    password: str
    stream: str
    tls: bool = False
    timeout_seconds: float = 10.0
    # Reached through a load balancer or proxy: connect to host:port, not to the address
    # the node advertises.
    load_balancer: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port} (vhost {self.vhost!r})"


@dataclass(frozen=True)
class StreamMessage:
    """One stored message: its offset, routing key (when it has one), body and chunk time."""

    offset: int
    routing_key: str
    body: bytes
    time_ms: int


class RetentionDropped(RuntimeError):
    """The range starts before the first message the stream still holds."""


class StreamUnreachable(ConnectionError):
    """The broker cannot be reached, refused the credentials, or has no such stream."""


@dataclass
class _Session:
    """A consumer and why its connection closed, if it did."""

    consumer: Consumer
    settings: StreamSettings
    lost: list[str]


def _run(settings: StreamSettings, work: Callable[[_Session], Awaitable[T]]) -> T:
    async def session() -> T:
        lost: list[str] = []
        consumer = Consumer(
            settings.host,
            settings.port,
            vhost=settings.vhost,
            username=settings.username,
            password=settings.password,
            ssl_context=ssl.create_default_context() if settings.tls else None,
            connection_name="ingestion_platform",
            load_balancer_mode=settings.load_balancer,
            on_close_handler=lambda info: lost.append(info.reason),
        )
        try:
            await asyncio.wait_for(consumer.start(), settings.timeout_seconds)
            return await work(_Session(consumer, settings, lost))
        except StreamUnreachable:
            raise
        except AuthenticationFailure:
            raise StreamUnreachable(refused(settings.address, settings.username)) from None
        except VirtualHostAccessFailure:
            raise StreamUnreachable(
                f"RabbitMQ at {settings.address} denied access to the virtual host: it does "
                f"not exist or user {settings.username!r} has no permission on it. Fix: "
                "correct `vhost:`, or grant the user access (`rabbitmqctl set_permissions`)"
            ) from None
        except StreamDoesNotExist:
            raise StreamUnreachable(
                f"RabbitMQ at {settings.address} has no stream {settings.stream!r}: declare it "
                "(x-queue-type: stream) or correct `stream:`"
            ) from None
        except (OSError, ServerError, TimeoutError) as error:
            raise StreamUnreachable(
                unreachable(settings.address, _reason(error), "stream_port")
            ) from None
        finally:
            try:
                await asyncio.wait_for(consumer.close(), settings.timeout_seconds)
            except Exception:  # noqa: BLE001, S110 - closing a connection that failed
                pass

    return asyncio.run(session())


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


def _message(offset: int, data: bytes, chunk_ms: int) -> StreamMessage:
    if not data.startswith(_AMQP_ENVELOPE):
        return StreamMessage(offset, "", data, chunk_ms)
    from rstream import amqp_decoder

    message = amqp_decoder(data)
    body = message.body
    if isinstance(body, list):  # AMQP 1.0 data sections
        body = b"".join(bytes(part) for part in body)
    elif isinstance(body, str):
        body = body.encode()
    annotations = message.message_annotations or {}
    key = annotations.get(b"x-routing-key") or annotations.get("x-routing-key") or b""
    key = key.decode() if isinstance(key, bytes) else str(key)
    return StreamMessage(offset, key, bytes(body or b""), chunk_ms)


async def _collect(
    session: _Session,
    spec: ConsumerOffsetSpecification,
    done: Callable[[list[StreamMessage]], bool],
    *,
    first_wait: float,
    quiet: float,
) -> list[StreamMessage]:
    """The messages from `spec` on, until `done` says so, nothing arrived for `first_wait`,
    or nothing more for `quiet` after that. Each is decoded as it arrives, while the broker
    sends the next chunks."""
    seen: list[StreamMessage] = []
    finished = asyncio.Event()
    last = time.monotonic()

    def on_message(data: Any, context: Any) -> None:
        nonlocal last
        if finished.is_set():
            return
        seen.append(_message(context.offset, bytes(data), context.timestamp))
        last = time.monotonic()
        if done(seen):
            finished.set()

    settings = session.settings
    subscription = await session.consumer.subscribe(
        settings.stream, on_message, offset_specification=spec, initial_credit=CREDIT
    )
    while not finished.is_set():
        try:
            await asyncio.wait_for(finished.wait(), min(quiet, first_wait, CHECK_SECONDS))
        except TimeoutError:
            if session.lost:
                where = f"after offset {seen[-1].offset}" if seen else "before its first message"
                raise StreamUnreachable(
                    f"RabbitMQ at {settings.address} lost the connection reading stream "
                    f"{settings.stream!r} {where} ({session.lost[0]}); nothing of this read "
                    "was landed, and a retry reads the same range"
                ) from None
            if time.monotonic() - last >= (quiet if seen else first_wait):
                break
    finished.set()
    await session.consumer.unsubscribe(subscription)
    return seen


@dataclass(frozen=True)
class Span:
    """Where a stream ends (the position past its newest message, 0 when empty) and the
    first message it holds at or past a given offset."""

    newest: int
    first: StreamMessage | None


def span(settings: StreamSettings, offset: int | None) -> Span:
    """The stream's end, and its first message at or past `offset` (when one is given), in
    one connection (rstream takes about 0.6 s to close one)."""

    async def work(session: _Session) -> Span:
        # The broker sends the last chunk whole: a short quiet after it ends the read.
        last = ConsumerOffsetSpecification(OffsetType.LAST, None)
        seen = await _collect(
            session, last, lambda _: False, first_wait=EMPTY_WAIT_SECONDS, quiet=0.1
        )
        newest = max((message.offset for message in seen), default=-1) + 1
        if offset is None or newest <= offset:
            return Span(newest, None)
        at = ConsumerOffsetSpecification(OffsetType.OFFSET, offset)
        first = await _collect(
            session, at, lambda _: True,
            first_wait=EMPTY_WAIT_SECONDS, quiet=settings.timeout_seconds,
        )  # fmt: skip
        return Span(newest, first[0] if first else None)

    return _run(settings, work)


def first_after(settings: StreamSettings, offset: int) -> StreamMessage | None:
    """The first message the stream holds at or past `offset`, if any."""
    return span(settings, offset).first


def read_range(settings: StreamSettings, lo: int, hi: int) -> list[StreamMessage]:
    """The messages at positions `(lo, hi]` (offsets lo .. hi-1), in order; RetentionDropped
    when the stream no longer holds the start of the range, StreamUnreachable when it ends
    before `hi`."""

    async def work(session: _Session) -> list[StreamMessage]:
        spec = ConsumerOffsetSpecification(OffsetType.OFFSET, lo)
        seen = await _collect(
            session, spec, lambda s: s[-1].offset >= hi - 1,
            first_wait=settings.timeout_seconds, quiet=settings.timeout_seconds,
        )  # fmt: skip
        if lo > 0 and (not seen or seen[0].offset > lo):
            # A read from a dropped offset starts at the oldest message left. Offsets need
            # not be dense (the stream's own bookkeeping takes some), so a first message
            # past `lo` is a drop only when the stream holds nothing at or before `lo`.
            first = ConsumerOffsetSpecification(OffsetType.FIRST, None)
            oldest = await _collect(
                session, first, lambda _: True,
                first_wait=EMPTY_WAIT_SECONDS, quiet=settings.timeout_seconds,
            )  # fmt: skip
            if not oldest or oldest[0].offset > lo:
                start = f"offset {oldest[0].offset}" if oldest else "its end (it is empty)"
                raise RetentionDropped(
                    f"stream {settings.stream!r} now starts at {start}: messages from offset "
                    f"{lo} of this slice were dropped by its retention, so it cannot be read "
                    "again exactly"
                )
        if not seen or seen[-1].offset < hi - 1:
            end = f"offset {seen[-1].offset}" if seen else f"offset {lo}"
            raise StreamUnreachable(
                f"stream {settings.stream!r} at {settings.address} sent nothing past {end} "
                f"within {settings.timeout_seconds:g} s, before this slice's last offset "
                f"{hi - 1}: was the stream deleted and declared again?"
            )
        return seen

    messages: list[StreamMessage] = []
    for message in _run(settings, work):  # in offset order, each offset once
        if lo <= message.offset < hi and (not messages or message.offset > messages[-1].offset):
            messages.append(message)
    return messages
