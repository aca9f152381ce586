"""Turn Kinesis records into rows: JSON (default), JSON Lines, or raw bytes, KPL or not.

Rows leave here as one Arrow table whose `payload` column holds each row's JSON text (or
bytes), next to where it came from: shard, sequence number, sub-sequence (a line of a JSON
Lines record, or a user record of a KPL aggregate), partition key and arrival time. Parsing
the JSON itself happens in DuckDB, in C++, when the slice lands (core/message_landing.py): Python
only checks what DuckDB cannot (UTF-8, size) and sends the rest on as text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisRecord

Decoding = Literal["json", "jsonl", "raw"]
KPL_MAGIC = b"\xf3\x89\x9a\xc2"

ORIGIN_SCHEMA = [
    ("_shard_id", pa.string()),
    ("_sequence_number", pa.string()),
    ("_sub_sequence", pa.int32()),
    ("_partition_key", pa.string()),
    ("_approximate_arrival", pa.timestamp("ms", tz="UTC")),
]


@dataclass
class BadRecord:
    """A record (or one line / user record of it) that cannot become a row."""

    shard_id: str
    sequence: str
    sub_sequence: int
    reason: str
    raw_value: str

    @property
    def location(self) -> str:
        suffix = f"/{self.sub_sequence}" if self.sub_sequence else ""
        return f"{self.shard_id}:{self.sequence}{suffix}"


@dataclass
class Decoded:
    """Rows to land (payload plus origin columns), the bad ones, and what was read."""

    rows: pa.Table
    bad: list[BadRecord] = field(default_factory=list)
    records_read: int = 0
    bytes_read: int = 0


def decode(
    records: Iterable[KinesisRecord], *, decoding: Decoding, kpl: bool, max_record_bytes: int
) -> Decoded:
    """Split records into rows and bad records; every item read ends up in one of them."""
    origin: dict[str, list] = {name: [] for name, _ in ORIGIN_SCHEMA}
    payloads: list[str | bytes] = []
    bad: list[BadRecord] = []
    read = size = 0
    for record in records:
        read += 1
        size += len(record.data)
        for sub, partition_key, data in _user_records(record, kpl, bad):
            if len(data) > max_record_bytes:
                bad.append(
                    BadRecord(
                        record.shard_id,
                        record.sequence,
                        sub,
                        f"record of {len(data):,} bytes is over max_record_bytes "
                        f"({max_record_bytes:,})",
                        _preview(data),
                    )
                )
                continue
            for line, value in _items(data, decoding, sub):
                if decoding != "raw":
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError as error:
                        reason = f"not UTF-8 text: {error.reason} at byte {error.start}"
                        where = (record.shard_id, record.sequence, line)
                        bad.append(BadRecord(*where, reason, _preview(value)))
                        continue
                origin["_shard_id"].append(record.shard_id)
                origin["_sequence_number"].append(record.sequence)
                origin["_sub_sequence"].append(line)
                origin["_partition_key"].append(partition_key or record.partition_key)
                origin["_approximate_arrival"].append(record.arrival_ms)
                payloads.append(value)
    arrays = [pa.array(origin[name], kind) for name, kind in ORIGIN_SCHEMA]
    payload_type = pa.binary() if decoding == "raw" else pa.string()
    names = [name for name, _ in ORIGIN_SCHEMA] + ["payload"]
    table = pa.Table.from_arrays([*arrays, pa.array(payloads, payload_type)], names=names)
    return Decoded(table, bad, read, size)


Column = Sequence[Any] | pa.Array | pa.ChunkedArray


def decode_columns(
    shard_id: str,
    sequences: Column,
    partition_keys: Column,
    arrivals_ms: Column,
    payloads: Column,
    *,
    decoding: Decoding,
    max_record_bytes: int,
) -> Decoded:
    """`decode` for one log's messages held as columns (NATS, RabbitMQ, a queue's buffer).

    When every message fits `max_record_bytes` and, unless raw, is UTF-8 (Arrow checks both
    in C++), the rows are built in Arrow; at 200,000 messages a Python object per message
    cost as much as landing them. Otherwise, and for JSON Lines, the record-by-record path
    runs and names each bad message.
    """
    data = _arrow(payloads, pa.binary())
    sizes = pc.binary_length(data)
    rows: pa.Array | pa.ChunkedArray | None = None
    if decoding != "jsonl" and (pc.max(sizes).as_py() or 0) <= max_record_bytes:
        try:
            rows = data if decoding == "raw" else data.cast(pa.string())
        except pa.ArrowInvalid:
            rows = None  # a message that is not UTF-8
    if rows is None:
        records = [
            KinesisRecord(shard_id, str(sequence), key, arrival, payload)
            for sequence, key, arrival, payload in zip(
                *(_arrow(c, t).to_pylist() for c, t in
                  ((sequences, pa.int64()), (partition_keys, pa.string()),
                   (arrivals_ms, pa.int64()), (payloads, pa.binary()))),
                strict=True,
            )
        ]  # fmt: skip
        return decode(records, decoding=decoding, kpl=False, max_record_bytes=max_record_bytes)
    count = len(data)
    origin = [
        pa.array([shard_id] * count, pa.string()),
        _arrow(sequences, pa.int64()).cast(pa.string()),
        pa.array([0] * count, pa.int32()),
        _arrow(partition_keys, pa.string()),
        _arrow(arrivals_ms, pa.int64()).cast(ORIGIN_SCHEMA[-1][1]),
    ]
    names = [name for name, _ in ORIGIN_SCHEMA] + ["payload"]
    table = pa.Table.from_arrays([*origin, rows], names=names)
    return Decoded(table, [], count, pc.sum(sizes).as_py() or 0)


def _arrow(values: Column, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(kind)
    return pa.array(values, kind)


def _items(data: bytes, decoding: Decoding, sub: int) -> Iterable[tuple[int, bytes]]:
    """The rows inside one (user) record: itself, or each non-blank line of it."""
    if decoding != "jsonl":
        yield sub, data
        return
    # A KPL user record holding JSON Lines numbers its lines after its own index.
    base = sub * 100_000
    for index, line in enumerate(data.split(b"\n")):
        if line.strip():
            yield base + index, line


def _user_records(
    record: KinesisRecord, kpl: bool, bad: list[BadRecord]
) -> Iterable[tuple[int, str | None, bytes]]:
    """(sub-sequence, partition key, data) of each user record in a Kinesis record."""
    if not kpl or not record.data.startswith(KPL_MAGIC):
        yield 0, None, record.data
        return
    try:
        items = deaggregate(record.data)
    except ValueError as error:
        reason = f"bad KPL aggregate: {error}"
        bad.append(BadRecord(record.shard_id, record.sequence, 0, reason, _preview(record.data)))
        return
    for index, (partition_key, data) in enumerate(items):
        yield index, partition_key, data


def _preview(data: bytes, limit: int = 4096) -> str:
    """The raw value as text for the quarantine table, cut to `limit` characters."""
    return data[:limit].decode("utf-8", errors="backslashreplace")


# KPL aggregation: magic, a protobuf AggregatedRecord, then the MD5 of that protobuf.
# AggregatedRecord: 1 = partition key table, 2 = explicit hash key table, 3 = records.
# Record: 1 = partition key index, 2 = explicit hash key index, 3 = data, 4 = tags.


def deaggregate(blob: bytes) -> list[tuple[str, bytes]]:
    """The (partition key, data) user records of a KPL aggregated record."""
    body, digest = blob[len(KPL_MAGIC) : -16], blob[-16:]
    if len(blob) < len(KPL_MAGIC) + 16 or hashlib.md5(body).digest() != digest:  # noqa: S324
        raise ValueError("checksum mismatch")
    keys: list[str] = []
    entries: list[tuple[int, bytes]] = []
    for number, value in _fields(body):
        if number == 1 and isinstance(value, bytes):
            keys.append(value.decode("utf-8"))
        elif number == 3 and isinstance(value, bytes):
            key_index, data = 0, b""
            for inner, item in _fields(value):
                if inner == 1 and isinstance(item, int):
                    key_index = item
                elif inner == 3 and isinstance(item, bytes):
                    data = item
            entries.append((key_index, data))
    try:
        return [(keys[index], data) for index, data in entries]
    except IndexError:
        raise ValueError("a user record names a partition key the aggregate lacks") from None


def aggregate(items: list[tuple[str, bytes]]) -> bytes:
    """A KPL aggregated record of (partition key, data) user records (producer and tests)."""
    keys = sorted({key for key, _ in items})
    body = b"".join(_field(1, key.encode()) for key in keys)
    for key, data in items:
        inner = _varint_field(1, keys.index(key)) + _field(3, data)
        body += _field(3, inner)
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324


def _fields(buffer: bytes) -> Iterable[tuple[int, int | bytes]]:
    position = 0
    while position < len(buffer):
        tag, position = _varint(buffer, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(buffer, position)
            yield number, value
        elif wire == 2:
            length, position = _varint(buffer, position)
            if position + length > len(buffer):
                raise ValueError("truncated field")
            yield number, buffer[position : position + length]
            position += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise ValueError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(data)) + data


def _varint_field(number: int, value: int) -> bytes:
    return _encode_varint(number << 3) + _encode_varint(value)
