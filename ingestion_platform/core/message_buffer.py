"""A durable buffer in the warehouse for messages a queue forgets once they are acknowledged.

Destructive queues (MQTT topics, RabbitMQ queues) cannot be read twice, so their messages
are committed here before the broker is told it may forget them, and the buffer becomes
the replayable log partitions are cut from: `seq` numbers the messages in the order they
were committed, and a partition is a range `(lo, hi]` of it, exactly as for a JetStream
stream. A message delivered again (its process died after the commit, before the ack) is
recognised by its `message_id` and not added twice.

Only unacknowledged messages are delivered again, and a client can have at most 65,535 of
them (MQTT's packet ids, AMQP's prefetch count), all committed last: so an incoming id is
looked up among the newest `REDELIVERY_HORIZON` messages only. Looking it up in the whole
buffer made each commit slower as the buffer grew (10 messages: 28 ms into an empty buffer,
287 ms into one of 3 million), until a drain fell behind its broker.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ingestion_platform.core.warehouse import Warehouse, quote_identifier

BUFFER_TABLE = "_buffer"
# Above the 65,535 messages a broker can leave unacknowledged with one client.
REDELIVERY_HORIZON = 100_000


@dataclass(frozen=True)
class BufferedMessage:
    """A message to keep: its id (for redeliveries), topic, payload and arrival (epoch ms)."""

    message_id: str
    topic: str
    payload: bytes
    arrived_ms: int


def _relation(dataset: str) -> str:
    return f"{quote_identifier(dataset)}.{quote_identifier(BUFFER_TABLE)}"


def append(warehouse: Warehouse, dataset: str, messages: list[BufferedMessage]) -> int:
    """Commit the messages not buffered yet, in one transaction; returns how many were new."""
    warehouse.check_dataset(dataset)
    relation = _relation(dataset)
    rows = pa.table(
        {
            "position": pa.array(range(len(messages)), pa.int64()),
            "message_id": [m.message_id for m in messages],
            "topic": [m.topic for m in messages],
            "payload": pa.array([m.payload for m in messages], pa.binary()),
            "arrived_at": pa.array([m.arrived_ms for m in messages], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
        }
    )
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            connection.execute("begin")
            connection.execute(f"create schema if not exists {quote_identifier(dataset)}")
            connection.execute(
                f"create table if not exists {relation} (seq bigint, message_id varchar, "
                "topic varchar, payload blob, arrived_at timestamptz)"
            )
            connection.register("incoming", rows)
            (newest,) = connection.execute(
                f"select coalesce(max(seq), 0) from {relation}"  # noqa: S608
            ).fetchall()[0]
            # A literal bound, so the scan skips the older row groups by their seq ranges.
            (added,) = connection.execute(
                f"insert into {relation} select ? + row_number() over (order by first_position), "  # noqa: S608
                "message_id, topic, payload, arrived_at from (select message_id, "
                "any_value(topic) as topic, any_value(payload) as payload, "
                "min(arrived_at) as arrived_at, min(position) as first_position "
                "from incoming group by message_id) new where message_id not in "
                f"(select message_id from {relation} where seq > ?)",
                [newest, newest - REDELIVERY_HORIZON],
            ).fetchall()[0]
            connection.execute("commit")
        finally:
            connection.close()
    return int(added)


def waiting_after(warehouse: Warehouse, dataset: str, after: int, threshold: int) -> tuple:
    """Messages past `after` (at most `threshold` counted), the seq of the `threshold`-th
    one (None while fewer wait), the newest seq and the oldest waiting arrival."""
    if not warehouse.table_exists(dataset, BUFFER_TABLE):
        return 0, None, None, None
    relation = _relation(dataset)
    ((count, newest, oldest),) = warehouse.query(
        f"select count(*), max(seq), min(arrived_at) from {relation} where seq > ?",  # noqa: S608
        (after,),
    )
    full = None
    if count >= threshold:
        ((full,),) = warehouse.query(
            f"select seq from {relation} where seq > ? order by seq limit 1 offset ?",  # noqa: S608
            (after, threshold - 1),
        )
    return min(count, threshold), full, newest, oldest


def read_range(warehouse: Warehouse, dataset: str, lo: int, hi: int) -> pa.Table:
    """Columns seq, topic, payload and arrived_ms of the buffered messages `(lo, hi]`."""
    with warehouse.connect() as connection:
        return connection.execute(
            f"select seq, topic, payload, epoch_ms(arrived_at) as arrived_ms "  # noqa: S608
            f"from {_relation(dataset)} where seq > ? and seq <= ? order by seq",
            [lo, hi],
        ).fetch_arrow_table()
