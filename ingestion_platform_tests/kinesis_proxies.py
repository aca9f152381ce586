"""HTTP proxies in front of a Kinesis emulator that answer as other Kinesis peers do.

- `EmptyPagesProxy`: GetRecords on a closed shard first answers empty pages that carry a
  NextShardIterator, as some implementations do before the shard's end; only a null
  NextShardIterator (or the shard's EndingSequenceNumber) says the shard is done.
- `StallProxy`: holds every call unanswered until released (a hung peer).
- `ServerErrorProxy`: answers HTTP 500 with an error code no retry list knows, N times.

Each runs a threaded HTTP server on a free loopback port while its `with` block lasts.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# An answer the proxy gives itself: (HTTP status, JSON body).
Answer = tuple[int, dict[str, Any]]


class KinesisProxy:
    """Forwards Kinesis JSON calls to `upstream`; subclasses may answer or watch them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                request = json.loads(body or b"{}")
                answer = proxy.answer(operation, request)
                if answer is None:
                    status, headers, data = proxy.forward(self.path, self.headers, body)
                    if status == 200:
                        proxy.observe(operation, request, json.loads(data or b"{}"))
                else:
                    status, payload = answer
                    headers = [("Content-Type", "application/x-amz-json-1.1")]
                    data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, operation: str, request: dict[str, Any]) -> Answer | None:
        """The proxy's own answer to a call, or None to pass it through."""
        return None

    def observe(self, operation: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Called with every successful answer passed through."""

    def forward(self, path: str, headers: Any, body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() != "host"}
            connection.request("POST", path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            kept = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in ("content-length", "transfer-encoding", "connection")
            ]
            return response.status, kept, data
        finally:
            connection.close()

    def __enter__(self) -> KinesisProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        """Let go of anything held (subclasses)."""


class EmptyPagesProxy(KinesisProxy):
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


class StallProxy(KinesisProxy):
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


class ServerErrorProxy(KinesisProxy):
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
