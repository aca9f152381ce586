"""A TCP proxy that resets connections mid-response, to test downloads that resume.

No emulator drops a connection halfway through a body, which is what a flaky network or
a load balancer does to a long S3 GET; this proxy does it on loopback. The first `resets`
connections it accepts are reset (SO_LINGER 0, then close: the client reads ECONNRESET)
once `reset_after` response bytes have been forwarded on them; later connections pass.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

from ingestion_platform_tests.servers import Background

DRAIN_SECONDS = 0.2


class FlakyProxy(Background):
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, resetting the first connections
    (while its `with` block lasts)."""

    def __init__(self, upstream_port: int, reset_after: int, resets: int) -> None:
        self.upstream_port = upstream_port
        self.reset_after = reset_after
        self.resets = resets
        self.accepted = 0
        self.reset_count = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                index = self.accepted
                self.accepted += 1
            limit = self.reset_after if index < self.resets else None
            threading.Thread(target=self._serve, args=(client, limit), daemon=True).start()

    def _serve(self, client: socket.socket, limit: int | None) -> None:
        # One thread per connection owns both sockets: a close while another thread is
        # blocked reading the socket would not release it, and so would send no reset.
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        forwarded = 0
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                if client in readable:
                    if not (request := client.recv(65536)):
                        return
                    upstream.sendall(request)
                if upstream in readable:
                    if not (data := upstream.recv(65536)):
                        return
                    if limit is not None and forwarded + len(data) >= limit:
                        client.sendall(data[: limit - forwarded])
                        # Linux drops unread bytes when a reset arrives: let the client
                        # read what was forwarded, as it would have on a real link.
                        time.sleep(DRAIN_SECONDS)
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        with self._lock:
                            self.reset_count += 1
                        return
                    client.sendall(data)
                    forwarded += len(data)
        except OSError:
            pass  # the client went away first
        finally:
            client.close()
            upstream.close()
