"""What waits at RabbitMQ that no partition holds yet, measured apart from the cuts.

A stream: the positions past the newest cut, and the broker's timestamp of the oldest
message among them. A queue: the broker's own count of ready messages (a passive declare;
RabbitMQ keeps no arrival time a client can read for a queue) plus what was drained into
the buffer but not cut yet, whose oldest arrival the buffer knows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ingestion_platform.core import message_buffer
from ingestion_platform.core.lag import SourceLag
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.rabbitmq.connectors.amqp_queue import AmqpSettings, queue_depth
from ingestion_platform.sources.rabbitmq.connectors.amqp_stream import StreamSettings, span


def stream_lag(settings: StreamSettings, cut_through: int) -> SourceLag:
    """Messages past position `cut_through` and the oldest's broker timestamp."""
    ends = span(settings, cut_through)
    waiting = max(0, ends.newest - cut_through)
    oldest = ends.first.time_ms if ends.first and waiting else None
    return SourceLag(
        waiting,
        "messages",
        datetime.fromtimestamp(oldest / 1000, UTC) if oldest else None,
        detail={"newest_position": ends.newest, "cut_through": cut_through},
    )


def queue_lag(
    settings: AmqpSettings, queue: str, warehouse: Warehouse, dataset: str, cut_through: int
) -> SourceLag:
    """Ready at the broker plus buffered past `cut_through`; the oldest buffered arrival."""
    ready, consumers = queue_depth(settings, queue)
    buffered, _, _, oldest = message_buffer.waiting_after(warehouse, dataset, cut_through, 2**62)
    return SourceLag(
        ready + buffered,
        "messages",
        oldest,
        detail={"at_broker": ready, "in_buffer": buffered, "consumers": consumers},
    )
