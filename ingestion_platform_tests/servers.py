"""Start-up code the tests' own servers and proxies share.

- `free_port`, `wait_listening`, `stop_process`: a peer run as a child process on a free
  loopback port (moto's server, kinesis-mock, sshd).
- `Background`: a server a thread runs while a `with` block lasts.
- `serve_http`, `reply_json`: a small HTTP API played by a `BaseHTTPRequestHandler`.
- `AwsJsonProxy`: an HTTP proxy in front of an AWS JSON API (moto's, kinesis-mock's) that
  passes calls through and may answer, watch or rewrite them (Kinesis and Glue proxies).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

# An answer a proxy gives itself: (HTTP status, JSON body).
Answer = tuple[int, dict[str, Any]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(
    port: int,
    process: subprocess.Popen,
    what: str,
    seconds: float = 30,
    interval: float = 0.1,
    log: Path | None = None,
) -> None:
    """Wait until `process` listens on 127.0.0.1:`port`; fail the test if it exits first (with
    its `log`, if it writes one) or does not listen within `seconds` (then it is killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = f": {log.read_text()}" if log is not None else ""
            pytest.fail(f"{what} exited with {process.returncode} before listening{said}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(interval)
    process.kill()
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {seconds}s")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, and kill what has not exited 3 s later (an xdist worker's children can
    inherit SIGTERM ignored)."""
    process.terminate()
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` answering on a free loopback port while the block lasts; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def reply_json(handler: BaseHTTPRequestHandler, payload: object, status: int = 200) -> None:
    """Answer the request `handler` is serving with `payload` as JSON."""
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Background:
    """A server run by a thread while a `with` block lasts: `start()` on entry, `stop()` on
    exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AwsJsonProxy(Background):
    """Forwards AWS JSON calls (`X-Amz-Target` names the operation) to `upstream`.

    Subclasses may answer a call themselves (`answer`), or see and rewrite what the upstream
    answered a successful call (`rewrite`; by default it calls `observe` and keeps the body).
    """

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
                        data = proxy.rewrite(operation, request, data)
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

    def rewrite(self, operation: str, request: dict[str, Any], data: bytes) -> bytes:
        """The body to return for a successful answer passed through (by default, as is)."""
        self.observe(operation, request, json.loads(data or b"{}"))
        return data

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

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.close()
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        """Let go of anything held (subclasses)."""
