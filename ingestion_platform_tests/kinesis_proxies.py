"""HTTP proxies in front of a Kinesis emulator that answer as other Kinesis peers do.

- `EmptyPagesProxy`: GetRecords on a closed shard first answers empty pages that carry a
  NextShardIterator, as some implementations do before the shard's end; only a null
  NextShardIterator (or the shard's EndingSequenceNumber) says the shard is done.
- `StallProxy`: holds every call unanswered until released (a hung peer).
- `ServerErrorProxy`: answers HTTP 500 with an error code no retry list knows, N times.
- `FaultProxy`: answers chosen calls with chosen Kinesis errors (throttling, an expired
  iterator), which no emulator does.

Each runs a threaded HTTP server on a free loopback port while its `with` block lasts
(servers.AwsJsonProxy, which passes every other call through).
"""

from __future__ import annotations

import threading
from typing import Any

from ingestion_platform_tests.servers import Answer, AwsJsonProxy


class EmptyPagesProxy(AwsJsonProxy):
    """Every read of a closed shard starts with `empty_pages` empty pages (with an iterator).

    Closed shards are learned from ListShards answers (an EndingSequenceNumber); each
    iterator GetShardIterator issues starts a read whose first pages are empty.
    """

    def __init__(self, upstream: str, empty_pages: int = 3) -> None:
        super().__init__(upstream)
        self.empty_pages = empty_pages
        self.closed: set[str] = set()
        self.served = 0
        self._read_of: dict[str, int] = {}  # iterator -> the read it belongs to
        self._left: dict[int, int] = {}  # read -> empty pages still to serve

    def observe(self, operation: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        with self.lock:
            if operation == "ListShards":
                for shard in response.get("Shards", []):
                    if shard["SequenceNumberRange"].get("EndingSequenceNumber"):
                        self.closed.add(shard["ShardId"])
            elif operation == "GetShardIterator" and request["ShardId"] in self.closed:
                read = len(self._left)
                self._left[read] = self.empty_pages
                self._read_of[response["ShardIterator"]] = read
            elif operation == "GetRecords" and response.get("NextShardIterator"):
                read = self._read_of.get(request["ShardIterator"])
                if read is not None:
                    self._read_of[response["NextShardIterator"]] = read

    def answer(self, operation: str, request: dict[str, Any]) -> Answer | None:
        if operation != "GetRecords":
            return None
        with self.lock:
            read = self._read_of.get(request["ShardIterator"])
            if read is None or self._left[read] <= 0:
                return None
            self._left[read] -= 1
            self.served += 1
        page = {
            "Records": [],
            "NextShardIterator": request["ShardIterator"],
            "MillisBehindLatest": 0,
        }
        return 200, page


class StallProxy(AwsJsonProxy):
    """Holds every call unanswered until `release()`, then passes it through."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.released = threading.Event()
        self.holding = threading.Event()
        self.held = 0

    def answer(self, operation: str, request: dict[str, Any]) -> Answer | None:
        if not self.released.is_set():
            with self.lock:
                self.held += 1
            self.holding.set()
            self.released.wait(timeout=300)
        return None

    def release(self) -> None:
        self.released.set()

    close = release


class ServerErrorProxy(AwsJsonProxy):
    """Answers `operation` with HTTP 500 and an unlisted error code `times` times."""

    def __init__(self, upstream: str, operation: str, times: int, code: str = "500") -> None:
        super().__init__(upstream)
        self.operation = operation
        self.left = times
        self.code = code
        self.answered = 0

    def answer(self, operation: str, request: dict[str, Any]) -> Answer | None:
        with self.lock:
            if operation != self.operation or self.left <= 0:
                return None
            self.left -= 1
            self.answered += 1
        return 500, {"__type": self.code, "message": "We encountered an internal error."}


class FaultProxy(AwsJsonProxy):
    """Answers some calls with a Kinesis error (HTTP 400), then lets calls through again.

    `faults` maps an operation (`GetRecords`) to a list of error codes to return, one per
    call, before calls pass through again. No emulator throttles, so this is how throttling
    and expired iterators are exercised against a real server.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.faults: dict[str, list[str]] = {}
        self.injected: list[str] = []

    def take(self, operation: str) -> str | None:
        with self.lock:
            pending = self.faults.get(operation)
            if pending:
                code = pending.pop(0)
                if code:  # an empty entry lets that call through
                    self.injected.append(f"{operation}:{code}")
                    return code
        return None

    def answer(self, operation: str, request: dict[str, Any]) -> Answer | None:
        code = self.take(operation)
        if code is None:
            return None
        return 400, {"__type": code, "message": f"injected {code}"}
