"""A JetStream stream as a replayable log: how much waits past a sequence, and a range read.

A partition of a JetStream source is a range of stream sequence numbers, `(lo, hi]`, with an
optional subject filter. Reading it again gives the same messages as long as the stream
still holds them; when retention has dropped the start of the range, the read says so
instead of landing a shorter slice. Reads go through an ephemeral ordered consumer that
starts at `lo + 1`, acknowledges nothing and is deleted when the read ends, so the platform
leaves no state on the server. nats-py is asyncio-only: each call runs its own short event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import pyarrow as pa
import pyarrow.compute as pc
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

T = TypeVar("T")


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


@dataclass
class StreamRange:
    """The messages of one range as columns: stream sequence, subject, payload, stored at.

    Columns, not an object per message: at 200,000 messages building one cost a second.
    """

    sequences: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    stored_ns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sequences)

    def __repr__(self) -> str:
        # asyncio formats a coroutine's result, and the generated repr printed every
        # payload (0.2 s at 200,000 messages).
        span = f", sequences {self.sequences[0]}..{self.sequences[-1]}" if self else ""
        return f"StreamRange({len(self)} messages{span})"

    @property
    def times_ms(self) -> pa.Array:
        """When each message was stored, in epoch milliseconds."""
        nanoseconds = pa.array(self.stored_ns, pa.string()).cast(pa.int64())
        return pc.divide(nanoseconds, 1_000_000)


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
                f"cannot reach NATS at {settings.address}: {_reason(cause)}. "
                f"Fix: {_connect_fix(cause)}"
            ) from None
        try:
            return await work(client.jetstream(timeout=settings.timeout_seconds))
        except NotFoundError:
            raise JetStreamUnreachable(
                f"NATS at {settings.address} has no JetStream stream {settings.stream!r}. "
                "Fix: create it (`nats stream add`), or correct `stream:`"
            ) from None
        except (NatsError, TimeoutError) as error:
            raise JetStreamUnreachable(
                f"NATS at {settings.address} did not answer: {_reason(error)}. Fix: check that "
                "the server runs with JetStream enabled (`nats-server -js`), or raise "
                "`timeout_seconds:`"
            ) from None
        finally:
            await client.close()

    return asyncio.run(session())


def _connect_fix(error: BaseException) -> str:
    if _refused_credentials(error):
        return "correct `token:` or `user:`/`password:` (or the environment variables they name)"
    return "start the server, or correct `servers:`"


def _refused_credentials(error: BaseException) -> bool:
    return "authorization" in (str(error) or "").lower()


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if _refused_credentials(error):
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


def read_range(settings: JetStreamSettings, lo: int, hi: int) -> StreamRange:
    """The stream's messages with sequence in `(lo, hi]` that match the filter, in order."""

    async def work(js: Any) -> StreamRange:
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
        return await _read_ordered(js, settings, lo, hi)

    return _run(settings, work)


async def _read_ordered(js: Any, settings: JetStreamSettings, lo: int, hi: int) -> StreamRange:
    """Messages `(lo, hi]` through an ordered push consumer, collected by its callback.

    nats-py's pull `fetch` awaits each message with its own timer task, which took 6 to 13
    times as long as a callback for 200,000 messages. An ordered consumer is nats-py's own
    gap-free delivery: it watches the consumer sequence, recreates the consumer from the
    last stream sequence it saw when one is missed, and answers flow control.
    """
    read = StreamRange()
    finished = asyncio.Event()

    async def collect(message: Any) -> None:
        if finished.is_set():
            return  # delivered before the unsubscribe took effect
        # `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or with a
        # domain and account hash in front and a token after: split from the right, these
        # are the fields 1 (sequence), 3 (stored at) and 4 (pending) either way. Cheaper
        # than nats-py's metadata object (a datetime per message).
        reply: str = message.reply
        tail = reply.rsplit(".", 4 if reply.count(".") == 8 else 5)
        sequence = int(tail[1])
        if sequence > hi:
            finished.set()
            return
        if read.sequences and sequence <= read.sequences[-1]:
            return  # delivered again (a consumer reset): each sequence lands once
        read.sequences.append(sequence)
        read.subjects.append(message.subject)
        read.payloads.append(message.data)
        read.stored_ns.append(tail[3])
        # The delivery says how many more match: none means the range is read.
        if sequence == hi or tail[4] == "0":
            finished.set()

    subscription = await js.subscribe(
        settings.subject or "",
        stream=settings.stream,
        cb=collect,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=lo + 1,
            filter_subject=settings.subject,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    try:
        while not finished.is_set():
            seen = len(read)
            try:
                await asyncio.wait_for(finished.wait(), settings.timeout_seconds)
            except TimeoutError:
                if len(read) > seen:
                    continue  # slow, not stuck
                # Nothing more matches the filter (no delivery at all), or the server
                # hangs: the consumer's own count tells which.
                if (await subscription.consumer_info()).num_pending == 0:
                    break
                raise
        return read
    finally:
        await subscription.unsubscribe()


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
