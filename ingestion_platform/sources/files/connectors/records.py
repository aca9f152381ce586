"""The original bytes of a staged file's records, for the quarantine.

DuckDB reports a rejected CSV record as decoded text, where undecodable bytes became `?`;
a fixed reader needs the bytes themselves. Records end at a newline outside quotes (CSV) or
at every newline (JSON Lines), the way the readers count them, so record N of the reader is
record N here. Only files with quarantined rows are scanned, once, up to the last one.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import BinaryIO

CHUNK = 1 << 23


def open_staged(local: str) -> BinaryIO:
    return gzip.open(local, "rb") if local.endswith(".gz") else open(local, "rb")  # noqa: SIM115


def records(stream: BinaryIO, quote: bytes | None) -> Iterator[bytes]:
    """Each record's bytes without its line end; a quoted newline stays inside its record."""
    buffer = b""
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        buffer += chunk
        start = at = 0
        while True:
            newline = buffer.find(b"\n", at)
            if newline < 0:
                break
            opening = buffer.find(quote, at, newline) if quote else -1
            if opening >= 0:
                closing = buffer.find(quote, opening + 1)
                if closing < 0:
                    break  # the quoted field goes on in the next chunk
                at = closing + 1
                continue
            yield buffer[start:newline].removesuffix(b"\r")
            start = at = newline + 1
        buffer = buffer[start:]
    if buffer:
        yield buffer.removesuffix(b"\r")


def raw_records(local: str, quote: str | None, wanted: set[int]) -> dict[int, bytes]:
    """Record number (1 = the file's first line) → its original bytes, for `wanted` ones."""
    found: dict[int, bytes] = {}
    if not wanted:
        return found
    last = max(wanted)
    with open_staged(local) as stream:
        for number, record in enumerate(records(stream, quote.encode() if quote else None), 1):
            if number in wanted:
                found[number] = record
            if number >= last:
                break
    return found


def has_records(local: str, quote: str | None, header: bool) -> bool:
    """Whether the file holds a non-blank record past its header."""
    with open_staged(local) as stream:
        seen = records(stream, quote.encode() if quote else None)
        if header:
            next(seen, None)
        return any(record.strip() for record in seen)


def count_records(local: str, quote: str | None, header: bool) -> int:
    """How many records a file holds, as far as it can be read (at least 1): what a file
    quarantined whole counts against the quarantine share."""
    count = 0
    try:
        with open_staged(local) as stream:
            count = sum(1 for _ in records(stream, quote.encode() if quote else None))
    except (OSError, EOFError, gzip.BadGzipFile):
        pass  # a truncated or corrupt file: what was read so far
    return max(1, count - (1 if header and count else 0))
