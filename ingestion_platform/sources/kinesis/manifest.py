"""Where each size partition of a stream keeps its exact slice: `<source>._partitions`.

A slice is a set of per-shard sequence ranges. Sequence numbers have up to 56 digits and a
stream may have many shards, so the ranges do not fit a readable partition key. They live in
the warehouse, which every process of a deployment reaches, next to the rows they produced:
the sensor writes a partition's ranges (one transaction) before it asks for its run, and the
landing marks them landed in the same transaction as the rows. The partition key is a short
id (`000042-20261126T101502`).

The sensor's positions are derived from this table, not kept in its cursor: a reset or
restarted sensor continues after the last cut, never re-cutting or skipping a record.

Rows with an empty partition key are bookkeeping: a retired shard, the origin of a source
that starts at LATEST (`*`), and the stream's identity (`@stream`: its creation time in
`first_arrival`). A stream deleted and created again under the same name starts a new
epoch at the `cut_at` of its `@stream` row: positions and unlanded partitions are read from
that epoch only, so the new stream is read from its start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from filelock import Timeout

from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.warehouse import Warehouse, quote_identifier

MANIFEST_TABLE = "_partitions"
STREAM_ROW = "@stream"
ORIGIN_ROW = "*"
# The epoch of a manifest written before streams were told apart: every row is in it.
FIRST_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "partition_key varchar not null, shard_id varchar not null, first_sequence varchar, "
    "last_sequence varchar, records bigint, bytes bigint, first_arrival timestamptz, "
    "last_arrival timestamptz, shard_ended boolean, lag_ms bigint, cut_at timestamptz, "
    "landed_at timestamptz"
)
# A sensor tick must not wait behind a long load for the lock: it skips and tries again.
SENSOR_LOCK_TIMEOUT_SECONDS = 20


class WarehouseBusy(RuntimeError):
    """The warehouse lock was not free within the sensor's patience."""


@dataclass(frozen=True)
class ShardRange:
    """Records `first_sequence` through `last_sequence` (inclusive) of one shard."""

    shard_id: str
    first_sequence: str
    last_sequence: str
    records: int
    bytes: int
    first_arrival: datetime
    last_arrival: datetime
    shard_ended: bool = False
    lag_ms: int = 0


@dataclass(frozen=True)
class ShardPosition:
    """How far a shard has been cut, and whether its end has been cut and landed."""

    last_sequence: str | None
    ended: bool
    ended_and_landed: bool


def relation(dataset: str) -> str:
    return f"{quote_identifier(dataset)}.{quote_identifier(MANIFEST_TABLE)}"


@contextmanager
def sensor_connection(warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writing connection under the warehouse lock, waiting at most a short while."""
    held = ExitStack()
    try:
        held.enter_context(warehouse.exclusive(timeout=SENSOR_LOCK_TIMEOUT_SECONDS))
    except Timeout:
        raise WarehouseBusy(
            f"the warehouse is busy (lock held > {SENSOR_LOCK_TIMEOUT_SECONDS}s)"
        ) from None
    with held:
        connection = warehouse.open_writer()
        try:
            yield connection
        finally:
            connection.close()


def ensure(connection: duckdb.DuckDBPyConnection, dataset: str) -> None:
    connection.execute(f"create schema if not exists {quote_identifier(dataset)}")
    connection.execute(f"create table if not exists {relation(dataset)} ({_COLUMNS})")


def positions(
    connection: duckdb.DuckDBPyConnection, dataset: str, epoch: datetime = FIRST_EPOCH
) -> dict[str, ShardPosition]:
    """Each shard's last cut sequence number, and whether its end was cut and landed."""
    ensure(connection, dataset)
    rows = connection.execute(
        "select shard_id, max(lpad(last_sequence, 64, '0')), bool_or(shard_ended), "  # noqa: S608
        f"bool_and(landed_at is not null) from {relation(dataset)} "
        "where cut_at >= ? and shard_id not in (?, ?) group by shard_id",
        [epoch, STREAM_ROW, ORIGIN_ROW],
    ).fetchall()
    return {
        shard: ShardPosition(
            last.lstrip("0") or "0" if last else None, bool(ended), bool(ended and done)
        )
        for shard, last, ended, done in rows
    }


def unlanded_keys(
    connection: duckdb.DuckDBPyConnection, dataset: str, epoch: datetime = FIRST_EPOCH
) -> list[str]:
    """Partitions cut but not landed yet, in cut order (the only ones a tick may re-request)."""
    ensure(connection, dataset)
    rows = connection.execute(
        f"select partition_key from {relation(dataset)} where partition_key <> '' "  # noqa: S608
        "group by partition_key having bool_and(landed_at is null) and min(cut_at) >= ? "
        "order by min(cut_at), partition_key",
        [epoch],
    ).fetchall()
    return [key for (key,) in rows]


def key_count(connection: duckdb.DuckDBPyConnection, dataset: str) -> int:
    """How many partitions were ever cut (numbers the next key)."""
    (count,) = fetch_row(
        connection,
        f"select count(distinct partition_key) from {relation(dataset)} "  # noqa: S608
        "where partition_key <> ''",
    )  # type: ignore[misc]
    return int(count)


def record_cuts(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    cuts: list[tuple[str, list[ShardRange]]],
    cut_at: datetime,
) -> None:
    """Store new partitions' ranges (in the caller's transaction)."""
    rows = [(key, r) for key, ranges in cuts for r in ranges]
    table = pa.table(
        {
            "partition_key": [key for key, _ in rows],
            "shard_id": [r.shard_id for _, r in rows],
            "first_sequence": [r.first_sequence for _, r in rows],
            "last_sequence": [r.last_sequence for _, r in rows],
            "records": pa.array([r.records for _, r in rows], pa.int64()),
            "bytes": pa.array([r.bytes for _, r in rows], pa.int64()),
            "first_arrival": pa.array(
                [r.first_arrival for _, r in rows], pa.timestamp("ms", "UTC")
            ),
            "last_arrival": pa.array([r.last_arrival for _, r in rows], pa.timestamp("ms", "UTC")),
            "shard_ended": pa.array([r.shard_ended for _, r in rows], pa.bool_()),
            "lag_ms": pa.array([r.lag_ms for _, r in rows], pa.int64()),
        }
    )
    connection.register("new_cuts", table)
    connection.execute(
        f"insert into {relation(dataset)} by name select *, $1::timestamptz as cut_at "  # noqa: S608
        "from new_cuts",
        [cut_at],
    )
    connection.unregister("new_cuts")


def retire(connection: duckdb.DuckDBPyConnection, dataset: str, shard_ids: list[str]) -> None:
    """Closed shards read to their end with nothing left to cut: never read again."""
    now = datetime.now(UTC)
    for shard_id in shard_ids:
        connection.execute(
            f"insert into {relation(dataset)} (partition_key, shard_id, shard_ended, "  # noqa: S608
            "cut_at, landed_at) values ('', ?, true, ?, ?)",
            [shard_id, now, now],
        )


def origin(connection: duckdb.DuckDBPyConnection, dataset: str) -> datetime | None:
    """Where a source that starts at LATEST starts: when it was first watched, or when the
    stream was created again (None before the first tick)."""
    return _latest(connection, dataset, ORIGIN_ROW)[0]


def record_origin(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    at: datetime,
    cut_at: datetime | None = None,
) -> None:
    _bookkeeping(connection, dataset, ORIGIN_ROW, at, cut_at or at)


def stream_identity(
    connection: duckdb.DuckDBPyConnection, dataset: str
) -> tuple[datetime | None, datetime | None]:
    """(creation time of the stream read, start of its epoch); (None, None) if not known."""
    return _latest(connection, dataset, STREAM_ROW)


def record_stream(
    connection: duckdb.DuckDBPyConnection, dataset: str, created: datetime, epoch: datetime
) -> None:
    _bookkeeping(connection, dataset, STREAM_ROW, created, epoch)


def _latest(
    connection: duckdb.DuckDBPyConnection, dataset: str, shard_id: str
) -> tuple[datetime | None, datetime | None]:
    row = fetch_row(
        connection,
        f"select first_arrival, cut_at from {relation(dataset)} where shard_id = ? "  # noqa: S608
        "order by cut_at desc limit 1",
        [shard_id],
    )
    return (row[0], row[1]) if row else (None, None)


def _bookkeeping(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    shard_id: str,
    at: datetime,
    cut_at: datetime,
) -> None:
    connection.execute(
        f"insert into {relation(dataset)} (partition_key, shard_id, first_arrival, cut_at, "  # noqa: S608
        "landed_at) values ('', ?, ?, ?, ?)",
        [shard_id, at, cut_at, cut_at],
    )


def ranges(warehouse: Warehouse, dataset: str, key: str) -> list[ShardRange]:
    """The ranges of one partition; empty if the partition was never cut here."""
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            ensure(connection, dataset)
            rows = connection.execute(
                "select shard_id, first_sequence, last_sequence, records, bytes, "  # noqa: S608
                "first_arrival, last_arrival, shard_ended, lag_ms "
                f"from {relation(dataset)} where partition_key = ? order by shard_id",
                [key],
            ).fetchall()
        finally:
            connection.close()
    return [ShardRange(*row) for row in rows]


def mark_landed(connection: duckdb.DuckDBPyConnection, dataset: str, key: str) -> None:
    """Runs inside the landing's transaction: the ranges count as landed once it commits."""
    connection.execute(
        f"update {relation(dataset)} set landed_at = $1 where partition_key = $2",  # noqa: S608
        [datetime.now(UTC), key],
    )


def cut_ends(
    connection: duckdb.DuckDBPyConnection, dataset: str, keys: list[str], cut_since: datetime
) -> dict[str, str]:
    """Per shard, the end of the newest range among partitions `keys` cut since `cut_since`.

    For the lag measure: it reads only the ranges of partitions Dagster knows, never the
    sensor's positions, so a cut that never became a partition counts as waiting.
    """
    ensure(connection, dataset)
    rows = connection.execute(
        "select shard_id, max(lpad(last_sequence, 64, '0')) "  # noqa: S608
        f"from {relation(dataset)} where partition_key in (select unnest(?)) "
        "and cut_at >= ? and last_sequence is not null group by shard_id",
        [keys, cut_since],
    ).fetchall()
    return {shard: last.lstrip("0") or "0" for shard, last in rows}
