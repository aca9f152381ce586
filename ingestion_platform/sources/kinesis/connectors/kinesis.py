"""A Dagster-free Kinesis reader: shards, exact sequence ranges, and time windows.

Positions are always sequence numbers (strings of up to 56 digits, compared as integers),
never shard iterators: an iterator expires 5 minutes after it was issued, so one is asked
for at the start of every read and again, from the last record read, whenever it expires.
Throttling and transient failures are retried (kinesis_retry.py); botocore's own retries
are off so that one policy, tested once, applies. A call unanswered within the read timeout
fails at once, naming the call: a hung peer must not hold a run or a sensor tick.

A closed shard is done only when GetRecords answers without a NextShardIterator, or once
its EndingSequenceNumber has been read: some peers answer empty pages with an iterator
before a closed shard's end (and moto after it), so an empty page is the tip only of an
open shard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ingestion_platform.sources.kinesis.connectors.errors import (
    CALL_FAILURES,
    explain,
)
from ingestion_platform.sources.kinesis.connectors.retry import Backoff, call_with_backoff

# GetRecords returns at most 10,000 records or 10 MiB per call.
MAX_RECORDS_PER_CALL = 10_000
# Kinesis answers a call in well under a second; a peer silent this long is hung.
DEFAULT_READ_TIMEOUT_SECONDS = 10
# Empty pages in a row at a closed shard's (claimed) tip before the read gives up for now:
# a peer that never says where the end is must not loop a reader forever.
MAX_EMPTY_PAGES = 100


@dataclass(frozen=True)
class StreamAddress:
    """Where a stream is: its name or ARN, region and (for emulators, VPC endpoints) endpoint."""

    stream: str
    region: str | None = None
    endpoint_url: str | None = None

    @property
    def key(self) -> dict[str, str]:
        """The request field naming the stream (a name or an ARN)."""
        return (
            {"StreamARN": self.stream}
            if self.stream.startswith("arn:")
            else {"StreamName": self.stream}
        )

    @property
    def name(self) -> str:
        return self.stream.rsplit("/", 1)[-1]


def make_client(address: StreamAddress, read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS) -> Any:
    """A Kinesis client with credentials from the standard AWS chain."""
    # Imported here: boto3 loads only in processes that reach AWS.
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=read_timeout,
        read_timeout=read_timeout,
    )
    return boto3.session.Session().client(
        "kinesis", region_name=address.region, endpoint_url=address.endpoint_url, config=config
    )


@dataclass(frozen=True)
class Shard:
    """A shard as ListShards describes it; `ending_sequence` is set once it is closed."""

    shard_id: str
    parents: tuple[str, ...]
    starting_sequence: str
    ending_sequence: str | None

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None

    @property
    def last_possible(self) -> int | None:
        """The closed shard's EndingSequenceNumber, when it is one of the shard's numbers.

        kinesis-mock gives 2**63 - 1 below its 56-digit sequence numbers: not a bound.
        """
        if self.ending_sequence is None:
            return None
        ending = sequence_int(self.ending_sequence)
        return ending if ending >= sequence_int(self.starting_sequence) else None


@dataclass(frozen=True)
class KinesisRecord:
    """One record as GetRecords returns it, with its arrival time in epoch milliseconds."""

    shard_id: str
    sequence: str
    partition_key: str
    arrival_ms: int
    data: bytes


@dataclass
class ShardRead:
    """The records read from one shard and where the read stopped."""

    shard_id: str
    records: list[KinesisRecord] = field(default_factory=list)
    # The shard is closed and its last record has been read (or it had none left).
    reached_end: bool = False
    # The read stopped at its deadline (or at MAX_EMPTY_PAGES) before its bound or the tip.
    stopped_early: bool = False
    millis_behind: int = 0
    calls: int = 0
    iterators_renewed: int = 0
    # Bytes of the records taken so far (kept as they are added, for `max_bytes`).
    taken_bytes: int = 0

    @property
    def bytes(self) -> int:
        return sum(len(record.data) for record in self.records)


def sequence_int(sequence: str) -> int:
    return int(sequence)


# Read progress: (shard id, records in the page just read).
OnPage = Callable[[str, int], None]


class KinesisReader:
    """Reads shards of one stream; every call is retried on throttling with backoff."""

    def __init__(
        self,
        client: Any,
        address: StreamAddress,
        backoff: Backoff | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    ):
        self.client = client
        self.address = address
        self.backoff = backoff or Backoff()
        self.read_timeout = read_timeout
        # Throttled calls retried, across the threads reading shards (for the run's metadata).
        self.throttled = 0
        self._count_lock = threading.Lock()

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One API call, retried on throttling and transient failures.

        A stream that is not there, refused credentials, an endpoint that does not answer
        or keeps failing raise `StreamUnavailable`, phrased for the person who declared the
        source (kinesis_errors.py). An expired iterator stays a ClientError: the reader
        renews it.
        """
        try:
            return call_with_backoff(
                getattr(self.client, operation), kwargs, self.backoff, self._retried
            )
        except CALL_FAILURES as error:
            if isinstance(error, ClientError) and (
                error.response.get("Error", {}).get("Code") == "ExpiredIteratorException"
            ):
                raise
            raise explain(
                error,
                operation=operation,
                stream=self.address.stream,
                where=self._where(),
                attempts=self.backoff.attempts,
                read_timeout=self.read_timeout,
            ) from None

    def _where(self) -> str:
        where = f" at {self.address.endpoint_url}" if self.address.endpoint_url else ""
        return where + (f" in region {self.address.region}" if self.address.region else "")

    def _retried(self) -> None:
        with self._count_lock:
            self.throttled += 1

    @property
    def _arn(self) -> dict[str, str]:
        # GetRecords names no stream, except by ARN (required for cross-account access).
        return {"StreamARN": self.address.stream} if self.address.stream.startswith("arn:") else {}

    def retention_hours(self) -> int:
        return int(self.summary()["RetentionPeriodHours"])

    def summary(self) -> dict[str, Any]:
        """DescribeStreamSummary: retention, creation time (a recreated stream's is new)."""
        return self.call("describe_stream_summary", **self.address.key)["StreamDescriptionSummary"]

    def created_at(self) -> datetime:
        created = self.summary()["StreamCreationTimestamp"]
        if isinstance(created, datetime):
            return created if created.tzinfo else created.replace(tzinfo=UTC)
        return datetime.fromtimestamp(float(created), UTC)

    def shards(self, page_size: int | None = None) -> list[Shard]:
        """Every shard ListShards returns, following its pages (up to 1,000 shards each)."""
        shards: list[Shard] = []
        size = {"MaxResults": page_size} if page_size else {}
        request: dict[str, Any] = {**self.address.key, **size}
        while True:
            page = self.call("list_shards", **request)
            for item in page["Shards"]:
                parents = tuple(
                    p for p in (item.get("ParentShardId"), item.get("AdjacentParentShardId")) if p
                )
                numbers = item["SequenceNumberRange"]
                shards.append(
                    Shard(
                        item["ShardId"],
                        parents,
                        numbers["StartingSequenceNumber"],
                        numbers.get("EndingSequenceNumber"),
                    )
                )
            token = page.get("NextToken")
            if not token:
                return shards
            # With a NextToken, ListShards refuses the stream's name.
            request = {"NextToken": token, **size}

    def _iterator(self, shard_id: str, position: dict[str, Any]) -> str | None:
        response = self.call("get_shard_iterator", **self.address.key, ShardId=shard_id, **position)
        return response.get("ShardIterator")

    def read(
        self,
        shard: Shard | str,
        *,
        after: str | None = None,
        at: str | None = None,
        since: datetime | None = None,
        through: str | None = None,
        before: datetime | None = None,
        max_records: int | None = None,
        max_bytes: int | None = None,
        limit_per_call: int = MAX_RECORDS_PER_CALL,
        deadline: float | None = None,
        on_page: OnPage | None = None,
    ) -> ShardRead:
        """Read one shard from a position up to a bound, or to its tip or end.

        Start `after` a sequence number, `at` one, at the arrival time `since`, or at the
        shard's trim horizon. Stop after the record `through`, before the first record that
        arrived at or after `before`, once `max_records` or `max_bytes` are read, at the
        shard's end, at its tip (an open shard: nothing more to read now), or once
        `time.monotonic()` passes `deadline`. A `Shard` says whether it is closed; a bare
        shard id is read as an open shard.
        """
        shard_id = shard if isinstance(shard, str) else shard.shard_id
        closed = not isinstance(shard, str) and shard.closed
        last_possible = None if isinstance(shard, str) else shard.last_possible
        result = ShardRead(shard_id)
        if last_possible is not None and after is not None and sequence_int(after) >= last_possible:
            result.reached_end = True  # its last record was read before: nothing to ask
            return result
        through_int = sequence_int(through) if through is not None else None
        before_ms = int(before.timestamp() * 1000) if before is not None else None
        pages = self._pages(shard_id, after, at, since, limit_per_call, closed, result)
        for page, behind, ended in pages:
            result.millis_behind = behind
            kept = len(result.records)
            bound = self._take(page, result, through_int, before_ms, max_records, max_bytes)
            if on_page is not None:
                on_page(shard_id, len(result.records) - kept)
            if bound:
                return result
            newest = result.records[-1].sequence if result.records else after
            if ended or (
                last_possible is not None
                and newest is not None
                and sequence_int(newest) >= last_possible
            ):
                result.reached_end = True
                return result
            if deadline is not None and time.monotonic() >= deadline:
                result.stopped_early = True
                return result
        return result

    @staticmethod
    def _take(
        page: list[KinesisRecord],
        result: ShardRead,
        through: int | None,
        before_ms: int | None,
        max_records: int | None,
        max_bytes: int | None,
    ) -> bool:
        """Add the page's records within the bounds to `result`; True once a bound is hit."""
        for record in page:
            if through is not None and sequence_int(record.sequence) > through:
                return True
            if before_ms is not None and record.arrival_ms >= before_ms:
                return True
            result.records.append(record)
            result.taken_bytes += len(record.data)
            if through is not None and sequence_int(record.sequence) == through:
                return True
            if (max_records is not None and len(result.records) >= max_records) or (
                max_bytes is not None and result.taken_bytes >= max_bytes
            ):
                return True
        return False

    def _pages(
        self,
        shard_id: str,
        after: str | None,
        at: str | None,
        since: datetime | None,
        limit: int,
        closed: bool,
        stats: ShardRead,
    ) -> Iterator[tuple[list[KinesisRecord], int, bool]]:
        """GetRecords pages until the shard's end or its tip; (records, ms behind, ended)."""
        if after is not None:
            position: dict[str, Any] = {
                "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                "StartingSequenceNumber": after,
            }
        elif at is not None:
            position = {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": at}
        elif since is not None:
            position = {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": since}
        else:
            position = {"ShardIteratorType": "TRIM_HORIZON"}
        iterator = self._iterator(shard_id, position)
        last: str | None = None
        empty = 0
        while iterator:
            try:
                response = self.call(
                    "get_records", ShardIterator=iterator, Limit=limit, **self._arn
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                    raise
                # Re-acquired from the last record read: nothing is skipped or read twice.
                stats.iterators_renewed += 1
                if last is not None:
                    position = {
                        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                        "StartingSequenceNumber": last,
                    }
                iterator = self._iterator(shard_id, position)
                continue
            stats.calls += 1
            records = [
                KinesisRecord(
                    shard_id,
                    item["SequenceNumber"],
                    item["PartitionKey"],
                    _epoch_ms(item["ApproximateArrivalTimestamp"]),
                    item["Data"],
                )
                for item in response["Records"]
            ]
            if records:
                last = records[-1].sequence
            iterator = response.get("NextShardIterator")
            behind = int(response.get("MillisBehindLatest", 0) or 0)
            yield records, behind, iterator is None
            at_tip = not records and behind == 0 and iterator is not None
            empty = empty + 1 if at_tip else 0
            if at_tip and not closed:
                return  # at the tip of an open shard: nothing more to read now
            if empty >= MAX_EMPTY_PAGES:
                stats.stopped_early = True
                return  # a closed shard that never says where it ends: try again later


def _epoch_ms(value: datetime | float) -> int:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(round(aware.timestamp() * 1000))
    return int(round(float(value) * 1000))
