"""A JetStream stream as a replayable log: how much waits past a sequence, and a range read.

A partition of a JetStream source is a range of stream sequence numbers, `(lo, hi]`, with an
optional subject filter. Reading it again gives the same messages as long as the stream
still holds them; when retention has dropped the start of the range, the read says so
instead of landing a shorter slice. Reads go through an ephemeral pull consumer that starts
at `lo + 1`, acknowledges nothing and is deleted when the read ends, so the platform leaves
no state on the server. nats-py is asyncio-only: each call runs its own short event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

T = TypeVar("T")
# Messages asked for per pull; JetStream caps a pull's batch anyway.
FETCH_BATCH = 1000


@dataclass(frozen=True)
class JetStreamSettings:
    """Where the stream is and how to sign in (secrets resolved, never logged)."""

    servers: str
    stream: str
    subject: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None
    timeout_seconds: float = 10.0

    @property
    def address(self) -> str:
        """The server list without credentials, for messages."""
        return ",".join(part.rsplit("@", 1)[-1] for part in self.servers.split(","))


@dataclass(frozen=True)
class StreamMessage:
    """One stored message: its stream sequence, subject, payload and time (epoch ms)."""

    sequence: int
    subject: str
    data: bytes
    time_ms: int


@dataclass(frozen=True)
class Waiting:
    """Messages past a sequence (matching the filter), the newest sequence, the oldest's time."""

    messages: int
    last_sequence: int
    first_sequence: int


class RetentionDropped(RuntimeError):
    """The range starts before the oldest message the stream still holds."""


class JetStreamUnreachable(ConnectionError):
    """The server cannot be reached, refused the credentials, or has no such stream."""


def _run(settings: JetStreamSettings, work: Callable[[Any], Awaitable[T]]) -> T:
    async def session() -> T:
        failures: list[BaseException] = []

        async def remember(error: BaseException) -> None:
            failures.append(error)  # instead of nats-py printing each attempt's traceback

        try:
            client = await nats.connect(
                servers=settings.servers.split(","),
                token=settings.token,
                user=settings.user,
                password=settings.password,
                connect_timeout=settings.timeout_seconds,
                # Two attempts per server, then give up (0 would mean: try for ever).
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                allow_reconnect=False,
                error_cb=remember,
            )
        except Exception as error:  # noqa: BLE001 - every way a connect fails, named once
            cause = failures[-1] if failures else error
            raise JetStreamUnreachable(
                f"cannot reach NATS at {settings.address}: {_reason(cause)}"
            ) from None
        try:
            return await work(client.jetstream(timeout=settings.timeout_seconds))
        except NotFoundError:
            raise JetStreamUnreachable(
                f"NATS at {settings.address} has no JetStream stream {settings.stream!r}"
            ) from None
        except (NatsError, TimeoutError) as error:
            raise JetStreamUnreachable(
                f"NATS at {settings.address} did not answer: {_reason(error)}"
            ) from None
        finally:
            await client.close()

    return asyncio.run(session())


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if "authorization" in text.lower():
        return "authorization violation (the token or user/password was refused)"
    return text


def waiting_after(settings: JetStreamSettings, after: int) -> Waiting:
    """How many messages (matching the filter) the stream holds past sequence `after`."""

    async def work(js: Any) -> Waiting:
        info = await js.stream_info(settings.stream)
        state = info.state
        if settings.subject is None:
            return Waiting(max(0, state.last_seq - max(after, state.first_seq - 1)),
                           state.last_seq, state.first_seq)  # fmt: skip
        if state.last_seq <= after:
            return Waiting(0, state.last_seq, state.first_seq)
        consumer = await js.add_consumer(
            settings.stream,
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.NONE,
                filter_subject=settings.subject,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        try:
            return Waiting(consumer.num_pending, state.last_seq, state.first_seq)
        finally:
            await js.delete_consumer(settings.stream, consumer.name)

    return _run(settings, work)


def read_range(settings: JetStreamSettings, lo: int, hi: int) -> list[StreamMessage]:
    """The stream's messages with sequence in `(lo, hi]` that match the filter, in order."""

    async def work(js: Any) -> list[StreamMessage]:
        info = await js.stream_info(settings.stream)
        # After a purge or retention the stream starts past the range (first_seq is then
        # last_seq + 1 when it is empty): those messages are gone, whatever their subject.
        if info.state.first_seq > lo + 1:
            raise RetentionDropped(
                f"stream {settings.stream!r} now starts at sequence {info.state.first_seq}: "
                f"messages {lo + 1}..{info.state.first_seq - 1} of this slice were dropped by "
                "its retention, so it cannot be read again exactly"
            )
        if info.state.last_seq < hi:
            raise RetentionDropped(
                f"stream {settings.stream!r} ends at sequence {info.state.last_seq}, before "
                f"this slice's end {hi}: was the stream deleted and created again?"
            )
        subscription = await js.pull_subscribe(
            settings.subject or "",
            stream=settings.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=lo + 1,
                ack_policy=AckPolicy.NONE,
                filter_subject=settings.subject,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        messages: list[StreamMessage] = []
        try:
            while True:
                try:
                    batch = await subscription.fetch(FETCH_BATCH, timeout=settings.timeout_seconds)
                except TimeoutError:
                    # Nothing more matches the filter (an empty fetch), or the server hangs:
                    # the consumer's own count tells which.
                    if (await subscription.consumer_info()).num_pending == 0:
                        return messages
                    raise
                for message in batch:
                    sequence = message.metadata.sequence.stream
                    if sequence > hi:
                        return messages
                    stamp = message.metadata.timestamp
                    messages.append(
                        StreamMessage(
                            sequence,
                            message.subject,
                            message.data,
                            int(stamp.timestamp() * 1000) if stamp else 0,
                        )
                    )
                    # The delivery says how many more match: none means the range is read.
                    if sequence == hi or message.metadata.num_pending == 0:
                        return messages
        finally:
            await subscription.unsubscribe()

    return _run(settings, work)


def message_time_ms(settings: JetStreamSettings, sequence: int) -> int | None:
    """When the message at `sequence` (or the next one stored) was stored, in epoch ms."""

    async def work(js: Any) -> int | None:
        try:
            message = await js.get_msg(settings.stream, seq=sequence, next=True,
                                       subject=settings.subject)  # fmt: skip
        except NotFoundError:
            return None
        return int(message.time.timestamp() * 1000) if message.time else None

    return _run(settings, work)
