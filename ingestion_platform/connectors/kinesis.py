"""A Dagster-free Kinesis reader: shards, exact sequence ranges, and time windows.

Positions are always sequence numbers (strings of up to 56 digits, compared as integers),
never shard iterators: an iterator expires 5 minutes after it was issued, so one is asked
for at the start of every read and again, from the last record read, whenever it expires.
Throttling and transient failures are retried (kinesis_retry.py); botocore's own retries
are off so that one policy, tested once, applies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ingestion_platform.connectors.kinesis_retry import Backoff, call_with_backoff

# GetRecords returns at most 10,000 records or 10 MiB per call.
MAX_RECORDS_PER_CALL = 10_000


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


def make_client(address: StreamAddress) -> Any:
    """A Kinesis client with credentials from the standard AWS chain."""
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=10,
        read_timeout=30,
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
    millis_behind: int = 0
    calls: int = 0
    iterators_renewed: int = 0

    @property
    def bytes(self) -> int:
        return sum(len(record.data) for record in self.records)


def sequence_int(sequence: str) -> int:
    return int(sequence)


# Codes of AWS errors no retry can fix, phrased for the source's declaration.
_NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)


class StreamUnavailable(ConnectionError):
    """The stream cannot be read at all: absent, refused credentials, endpoint down."""


class KinesisReader:
    """Reads shards of one stream; every call is retried on throttling with backoff."""

    def __init__(self, client: Any, address: StreamAddress, backoff: Backoff | None = None):
        self.client = client
        self.address = address
        self.backoff = backoff or Backoff()
        # Throttled calls retried, across the threads reading shards (for the run's metadata).
        self.throttled = 0
        self._count_lock = threading.Lock()

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One API call, retried on throttling and transient failures.

        A stream that is not there, refused credentials or an endpoint that does not answer
        raise `StreamUnavailable`, phrased for the person who declared the source.
        """
        try:
            return call_with_backoff(
                getattr(self.client, operation), kwargs, self.backoff, self._retried
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _NOT_FOUND_CODES:
                raise StreamUnavailable(
                    f"stream {self.address.stream!r} does not exist{self._where()}. Fix: check "
                    "`stream`, `region` and `endpoint_url`"
                ) from None
            if code in _CREDENTIAL_CODES:
                raise StreamUnavailable(
                    f"AWS refused the credentials for stream {self.address.stream!r}"
                    f"{self._where()} ({code}). Fix: check the credentials of the AWS chain "
                    "(AWS_PROFILE, AWS_ACCESS_KEY_ID, …) and their Kinesis permissions"
                ) from None
            raise
        except NoCredentialsError:
            raise StreamUnavailable(
                "no AWS credentials found. Fix: set them the standard AWS way (AWS_PROFILE, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance role)"
            ) from None
        except EndpointConnectionError:
            raise StreamUnavailable(
                f"cannot reach Kinesis{self._where()}. Fix: check that the endpoint is up "
                "and `endpoint_url`/`region` point at it"
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
        summary = self.call("describe_stream_summary", **self.address.key)
        return int(summary["StreamDescriptionSummary"]["RetentionPeriodHours"])

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
        shard_id: str,
        *,
        after: str | None = None,
        at: str | None = None,
        since: datetime | None = None,
        through: str | None = None,
        before: datetime | None = None,
        max_records: int | None = None,
        max_bytes: int | None = None,
        limit_per_call: int = MAX_RECORDS_PER_CALL,
    ) -> ShardRead:
        """Read one shard from a position up to a bound, or to its tip.

        Start `after` a sequence number, `at` one, at the arrival time `since`, or at the
        shard's trim horizon. Stop after the record `through`, before the first record that
        arrived at or after `before`, once `max_records` or `max_bytes` are read, at the
        shard's end, or at its tip (nothing more to read now).
        """
        result = ShardRead(shard_id)
        through_int = sequence_int(through) if through is not None else None
        before_ms = int(before.timestamp() * 1000) if before is not None else None
        size = 0
        for page, behind, ended in self._pages(shard_id, after, at, since, limit_per_call, result):
            result.millis_behind = behind
            for record in page:
                if through_int is not None and sequence_int(record.sequence) > through_int:
                    return result
                if before_ms is not None and record.arrival_ms >= before_ms:
                    return result
                result.records.append(record)
                size += len(record.data)
                if through_int is not None and sequence_int(record.sequence) == through_int:
                    return result
                if (max_records is not None and len(result.records) >= max_records) or (
                    max_bytes is not None and size >= max_bytes
                ):
                    return result
            if ended:
                result.reached_end = True
                return result
        return result

    def _pages(
        self,
        shard_id: str,
        after: str | None,
        at: str | None,
        since: datetime | None,
        limit: int,
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
            if not records and behind == 0 and iterator is not None:
                return  # at the tip of an open shard: nothing more to read now


def _epoch_ms(value: datetime | float) -> int:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(round(aware.timestamp() * 1000))
    return int(round(float(value) * 1000))
