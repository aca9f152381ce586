"""Local stand-in for a Spotify-style music catalog API, standard library only.

Why it exists: the demo, the tests and the benchmark need an HTTP source that behaves like a real
public API (OAuth2 client credentials, expiring tokens, 50-item page caps, rate limits, flaky
responses) yet is local, fast, deterministic and controllable. Data comes from a seeded
:class:`~ingestion_platform.demo.music_catalog.Catalog`, so callers can compute the exact records a
client should land. Limits and faults can be changed while it runs, from Python
(``server.config.update(...)``) or over HTTP (``POST /_admin/config``) for other processes.

Rate limit semantics (sliding-window log, not a token bucket): with rate ``r`` and burst ``b``
(default ``ceil(r)``) the window is ``w = b / r`` seconds, and a request arriving at ``t`` is
admitted iff fewer than ``b`` requests were *admitted* in ``(t - w, t]``. So any half-open window
``[s, s + w)`` holds at most ``b`` admitted requests; rejected requests (429, counted in
``stats()["over_limit"]``) do not use up budget. Arrival is stamped with ``time.monotonic()`` under
the limiter's lock as the first step of handling, so stamps are in admission order, and
``stats()["arrivals"]`` lists them (admitted or not). A client pacing itself to exactly ``b``
requests per ``w`` by its own clock can still trip the limit through latency jitter: keep a margin.
Only ``/v1`` requests are rate limited and subject to fault injection: the token endpoint stands in
for a separate accounts host, so a client's retry logic is exercised on data requests rather than
on its token fetch. ``/_admin`` requests are never counted.

The CLI's default credentials ("demo-client"/"demo-secret") are demo-only; nothing here logs
secrets, tokens or query strings (which may carry ``api_key``).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from ingestion_platform.demo.music_catalog import Catalog, Record

MAX_LIMIT = 50
DEFAULT_LIMIT = 20
ARRIVALS_KEPT = 10_000  # bounded so a long benchmark cannot grow memory without limit
_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Settings:
    """Runtime-tunable limits and faults (the keys accepted by ``configure`` and /_admin/config)."""

    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None  # None means ceil(rate_limit_per_second)
    retry_after_seconds: int | None = None  # None means computed from the window (at least 1)
    fail_next_5xx: int = 0  # the next N /v1 requests get 503
    fail_every_nth: int | None = None  # every Nth /v1 request (since reset) gets 500
    force_429_next: int = 0  # the next N /v1 requests get 429, regardless of the rate limit
    slow_seconds: float = 0.0
    slow_every_nth: int | None = None  # None means every /v1 request is slowed
    malformed_offset: int | None = None  # new-releases page at this offset: truncated JSON
    wrong_content_type_offset: int | None = None  # new-releases page at this offset: HTML
    # 1: pagination never ends, as a buggy API's does: the last new-releases page links to
    # itself, and the last cursor page hands out the first page's cursor again.
    loop_at_end: int = 0


_SETTING_NAMES = frozenset(f.name for f in fields(Settings))
_NEVER_NULL = {"fail_next_5xx", "force_429_next", "slow_seconds", "loop_at_end"}
_FRACTIONAL = {"rate_limit_per_second", "slow_seconds"}
_POSITIVE = {"rate_limit_per_second", "rate_limit_burst", "fail_every_nth", "slow_every_nth"}


def _validated(changes: dict[str, Any]) -> dict[str, Any]:
    # Admin changes arrive as untrusted JSON; reject them here rather than fail mid-request.
    unknown = set(changes) - _SETTING_NAMES
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    for name, value in changes.items():
        if value is None and name not in _NEVER_NULL:
            continue
        kinds = (int, float) if name in _FRACTIONAL else (int,)
        if not isinstance(value, kinds) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if name in _POSITIVE and value <= 0:
            raise ValueError(f"{name} must be positive (or null to disable)")
    return changes


class LiveConfig:
    """Thread-safe holder of :class:`Settings`; requests read consistent snapshots."""

    def __init__(self, **initial: Any) -> None:
        self._lock = threading.Lock()
        self._settings = Settings(**_validated(initial))

    def update(self, **changes: Any) -> Settings:
        changes = _validated(changes)
        with self._lock:
            self._settings = replace(self._settings, **changes)
            return self._settings

    def reset(self) -> Settings:
        """Back to no limits and no faults (constructor settings are not remembered)."""
        with self._lock:
            self._settings = Settings()
            return self._settings

    def snapshot(self) -> Settings:
        with self._lock:
            return self._settings

    def consume(self, name: str) -> bool:
        """Use up one of a "next N requests" fault; the check and decrement are one atomic step."""
        with self._lock:
            remaining = getattr(self._settings, name)
            if remaining <= 0:
                return False
            self._settings = replace(self._settings, **{name: remaining - 1})
            return True


def max_in_window(timestamps: list[float], window: float = 1.0) -> int:
    """Most timestamps inside any half-open window of ``window`` seconds (input sorted)."""
    best, start = 0, 0
    for end, stamp in enumerate(timestamps):
        while stamp - timestamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Traffic:
    """Counters plus the rate limiter, under one lock so arrivals are stamped in lock order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seq = self._v1_seq = 0
            self._by_path: collections.Counter[str] = collections.Counter()
            self._statuses: collections.Counter[int] = collections.Counter()
            self._over_limit = self._tokens_issued = 0
            self._arrivals: collections.deque[float] = collections.deque(maxlen=ARRIVALS_KEPT)
            self._admitted: collections.deque[float] = collections.deque()

    def arrive(self, route: str, limit: tuple[float, int] | None) -> tuple[int, float | None]:
        """Count one request; return its /v1 sequence number and, if over the limit, the wait."""
        with self._lock:
            now = time.monotonic()
            self._seq += 1
            self._by_path[route] += 1
            if not route.startswith("/v1"):
                return 0, None
            self._v1_seq += 1
            self._arrivals.append(now)
            if limit is None:
                return self._v1_seq, None
            rate, burst = limit
            window = burst / rate
            while self._admitted and self._admitted[0] <= now - window:
                self._admitted.popleft()
            if len(self._admitted) < burst:
                self._admitted.append(now)
                return self._v1_seq, None
            self._over_limit += 1
            return self._v1_seq, self._admitted[0] + window - now

    def count_response(self, status: int, token_issued: bool) -> None:
        with self._lock:
            self._statuses[status] += 1
            self._tokens_issued += token_issued

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            arrivals = list(self._arrivals)
            return {
                "requests_total": self._seq,
                "by_path": dict(self._by_path),
                "status_counts": {str(code): n for code, n in sorted(self._statuses.items())},
                "over_limit": self._over_limit,
                "served_429": self._statuses[429],
                "served_5xx": sum(n for code, n in self._statuses.items() if code >= 500),
                "tokens_issued": self._tokens_issued,
                "arrivals": arrivals,
                "max_arrivals_in_any_1s": max_in_window(arrivals),
            }


class TokenStore:
    """Bearer tokens and expiry times, kept past expiry so "expired" differs from "invalid"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl: float) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            # Forget tokens long expired so a benchmark that re-authenticates cannot grow this.
            self._expiry = {t: exp for t, exp in self._expiry.items() if exp > now - 3600}
            self._expiry[token] = now + ttl
        return token

    def status(self, token: str) -> str:
        with self._lock:
            expiry = self._expiry.get(token)
        if expiry is None:
            return "invalid"
        return "valid" if time.monotonic() < expiry else "expired"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers or {})


class ApiError(Exception):
    """Raised anywhere while handling a request; rendered as a Spotify-style error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = json_response(
            status, {"error": {"status": status, "message": message}}, headers
        )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: HTTPMessage
    body: bytes
    base_url: str  # scheme://host[:port] as the client addressed us, for absolute links

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.first(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise ApiError(400, f"Invalid {name}: {raw!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ApiError(400, f"Invalid {name}: {value} (must be {bounds})")
        return value

    def day(self, name: str) -> str | None:
        raw = self.first(name)
        if raw is None:
            return None
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise ApiError(400, f"Invalid {name}: {raw!r} (expected YYYY-MM-DD)") from None

    def link(self, **overrides: int | str) -> str:
        # Keep the caller's filters; drop api_key because a key should not echo back in bodies.
        params = {k: v for k, v in parse_qsl(self.raw_query, keep_blank_values=True)}
        params.pop("api_key", None)
        params.update({k: str(v) for k, v in overrides.items()})
        return f"{self.base_url}{self.path}?{urlencode(params)}"


def _encode_cursor(album: Record) -> str:
    raw = json.dumps([album["release_date"], album["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key):
            return key[0], key[1]
    except ValueError:  # bad base64, bad UTF-8 or bad JSON: all just "not our cursor"
        pass
    raise ApiError(400, "Invalid cursor")


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except ValueError:  # bad base64 (binascii.Error) or bytes that are not UTF-8
        return None
    return (user, password) if sep else None


def _same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class AuthConfig:
    client_id: str
    client_secret: str = field(repr=False)
    token_ttl: float
    api_key: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    require_auth: bool = True


_TRACKS_PATH = re.compile(r"/v1/albums/([^/]+)/tracks")


def _route_of(path: str) -> tuple[str, tuple[str, ...]]:
    """Route template (the stats key) and path arguments; album ids would make stats unbounded."""
    if match := _TRACKS_PATH.fullmatch(path):
        return "/v1/albums/{id}/tracks", match.groups()
    return path, ()


class MusicApi:
    """Routing, auth, faults and payloads; independent of the socket server for readability."""

    def __init__(self, catalog: Catalog, auth: AuthConfig, config: LiveConfig) -> None:
        self.catalog = catalog
        self.auth = auth
        self.config = config
        self.traffic = Traffic()
        self.tokens = TokenStore()
        self._routes: dict[str, tuple[str, Callable[..., Response]]] = {
            "/api/token": ("POST", self._token),
            "/v1/browse/new-releases": ("GET", self._new_releases),
            "/v1/albums/{id}/tracks": ("GET", self._tracks),
            "/v1/paged/albums": ("GET", self._paged),
            "/v1/cursor/albums": ("GET", self._cursor),
            "/v1/linked/albums": ("GET", self._linked),
        }

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_admin/"):
            return self._admin(request)
        route, args = _route_of(request.path)
        if route in self._routes:
            response = self._serve(request, route, args)
        else:
            self.traffic.arrive("(unmatched)", None)
            response = ApiError(404, f"Unknown path {request.path}").response
        issued = route == "/api/token" and response.status == 200
        self.traffic.count_response(response.status, issued)
        return response

    def _serve(self, request: Request, route: str, args: tuple[str, ...]) -> Response:
        method, handler = self._routes[route]
        try:
            if fault := self._admit(route):
                return fault
            if request.method != method:
                raise ApiError(405, f"Method {request.method} not allowed")
            if route.startswith("/v1"):
                self._authenticate(request)
            return handler(request, *args)
        except ApiError as error:
            return error.response

    def _admit(self, route: str) -> Response | None:
        """Forced faults and the rate limit, applied in arrival order before auth and routing."""
        settings = self.config.snapshot()
        forced = route.startswith("/v1") and self.config.consume("force_429_next")
        rate = settings.rate_limit_per_second
        limit = (
            (rate, settings.rate_limit_burst or math.ceil(rate)) if rate and not forced else None
        )
        seq, wait = self.traffic.arrive(route, limit)
        if not route.startswith("/v1"):
            return None
        if forced or wait is not None:
            retry_after = settings.retry_after_seconds or max(1, math.ceil(wait or 0))
            headers = {"Retry-After": str(retry_after)}
            return ApiError(429, "API rate limit exceeded", headers).response
        if self.config.consume("fail_next_5xx"):
            return ApiError(503, "Service unavailable (injected fault)").response
        if settings.fail_every_nth and seq % settings.fail_every_nth == 0:
            return ApiError(500, "Internal server error (injected fault)").response
        if settings.slow_seconds and seq % (settings.slow_every_nth or 1) == 0:
            time.sleep(settings.slow_seconds)  # outside every lock: other requests keep flowing
        return None

    def _token(self, request: Request) -> Response:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type", [None])[0] != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        given = _basic_credentials(request.headers.get("Authorization", "")) or (
            form.get("client_id", [""])[0],
            form.get("client_secret", [""])[0],
        )
        if not (_same(given[0], self.auth.client_id) and _same(given[1], self.auth.client_secret)):
            body = {"error": "invalid_client", "error_description": "Invalid client credentials"}
            return json_response(401, body)
        token = self.tokens.issue(self.auth.token_ttl)
        ttl = self.auth.token_ttl
        expires_in = int(ttl) if float(ttl).is_integer() else ttl
        return json_response(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        )

    def _authenticate(self, request: Request) -> None:
        if not self.auth.require_auth:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            state = self.tokens.status(credential.strip())
            if state == "valid":
                return
            message = "The access token expired" if state == "expired" else "Invalid access token"
            raise ApiError(401, message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        key = self.auth.api_key
        if key and (
            _same(request.headers.get("X-API-Key"), key) or _same(request.first("api_key"), key)
        ):
            return
        if self.auth.basic_auth and _basic_credentials(header) == self.auth.basic_auth:
            return
        raise ApiError(401, "No token provided" if not header else "Invalid credentials")

    def _window(self, request: Request) -> list[Record]:
        after, before = request.day("released_after"), request.day("released_before")
        return self.catalog.releases_between(after, before)

    def _offset_page(self, request: Request, items: list[Record]) -> dict[str, Any]:
        offset = request.integer("offset", 0, 0)
        limit = request.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        more = offset + limit < len(items)
        previous = request.link(offset=max(0, offset - limit), limit=limit) if offset else None
        return {
            "href": request.link(offset=offset, limit=limit),
            "items": items[offset : offset + limit],
            "limit": limit,
            "offset": offset,
            "total": len(items),
            "next": request.link(offset=offset + limit, limit=limit) if more else None,
            "previous": previous,
        }

    def _new_releases(self, request: Request) -> Response:
        page = self._offset_page(request, self._window(request))
        settings = self.config.snapshot()
        if settings.loop_at_end and page["next"] is None:
            page["next"] = page["href"]
        response = json_response(200, {"albums": page})
        if page["offset"] == settings.malformed_offset:
            response.body = response.body[: len(response.body) // 2]
        if page["offset"] == settings.wrong_content_type_offset:
            html = b"<html><body><h1>502 Bad Gateway</h1><p>upstream error</p></body></html>"
            response = Response(200, html, content_type="text/html")
        return response

    def _tracks(self, request: Request, album_id: str) -> Response:
        if self.catalog.album(album_id) is None:
            raise ApiError(404, f"Non existing id: '{album_id}'")
        return json_response(200, self._offset_page(request, self.catalog.tracks_for(album_id)))

    def _paged(self, request: Request) -> Response:
        items = self._window(request)
        page = request.integer("page", 1, 1)
        size = request.integer("page_size", DEFAULT_LIMIT, 1, MAX_LIMIT)
        chunk = items[(page - 1) * size : page * size]
        return json_response(
            200, {"page": page, "total_pages": math.ceil(len(items) / size), "items": chunk}
        )

    def _cursor(self, request: Request) -> Response:
        limit = request.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = request.first("cursor")
        key = _decode_cursor(cursor) if cursor else None
        after, before = request.day("released_after"), request.day("released_before")
        rest = self.catalog.releases_after_key(key, after, before)
        chunk = rest[:limit]
        next_cursor = _encode_cursor(chunk[-1]) if len(rest) > limit else None
        if next_cursor is None and self.config.snapshot().loop_at_end:
            first = self.catalog.releases_after_key(None, after, before)[:limit]
            next_cursor = _encode_cursor(first[-1]) if first else None  # the second page again
        return json_response(200, {"items": chunk, "next_cursor": next_cursor})

    def _linked(self, request: Request) -> Response:
        page = self._offset_page(request, self._window(request))
        headers = {"X-Total-Count": str(page["total"])}
        if page["next"]:
            headers["Link"] = f'<{page["next"]}>; rel="next"'
        return json_response(200, page["items"], headers)

    def _admin(self, request: Request) -> Response:
        action = (request.method, request.path)
        if action == ("GET", "/_admin/stats"):
            return json_response(200, self.traffic.snapshot())
        if action == ("GET", "/_admin/config"):
            return json_response(200, asdict(self.config.snapshot()))
        if action == ("POST", "/_admin/reset"):
            self.traffic.reset()
            return json_response(200, {"reset": True})
        if action == ("POST", "/_admin/config"):
            try:
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                return json_response(200, asdict(self.config.update(**changes)))
            except ValueError as error:  # includes json.JSONDecodeError
                return json_response(400, {"error": {"status": 400, "message": str(error)}})
        return ApiError(404, f"Unknown admin action {request.method} {request.path}").response


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: a benchmark measures the client, not TCP handshakes.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK would
    # add ~40 ms to every kept-alive response.
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self._respond()

    def do_POST(self) -> None:  # noqa: N802
        self._respond()

    def _respond(self) -> None:
        try:
            response = self.server.api.handle(self._request())
        except Exception:  # a bug must still produce a response, or the client hangs
            response = ApiError(500, "Internal server error").response
        content_type = response.content_type
        if content_type == "application/json":
            content_type += "; charset=utf-8"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _request(self) -> Request:
        length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
        parts = urlsplit(self.path)
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            raw_query=parts.query,
            headers=self.headers,
            body=self.rfile.read(length) if length else b"",
            base_url=f"http://{host}",
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The default line includes the query string, which may carry an api_key.
        if self.server.verbose:
            path = urlsplit(self.path).path
            sys.stderr.write(f"{self.address_string()} {self.command} {path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        if self.server.verbose:
            super().log_message(format, *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections under a parallel client

    def __init__(self, address: tuple[str, int], api: MusicApi, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        # Keep-alive handler threads would otherwise keep answering after stop().
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MusicApiServer:
    """The music API on a background thread; ``port=0`` picks a free port (see ``url``)."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        token_ttl: float = 3600,
        api_key: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        require_auth: bool = True,
        verbose: bool = False,
        **settings: Any,
    ) -> None:
        self.catalog = catalog or Catalog()
        self.config = LiveConfig(**settings)
        basic = (basic_auth[0], basic_auth[1]) if basic_auth else None
        auth = AuthConfig(client_id, client_secret, token_ttl, api_key, basic, require_auth)
        self.api = MusicApi(self.catalog, auth, self.config)
        self._httpd = _HttpServer((host, port), self.api, verbose)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MusicApiServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def configure(self, **changes: Any) -> Settings:
        return self.config.update(**changes)

    def stats(self) -> dict[str, Any]:
        return self.api.traffic.snapshot()

    def reset_stats(self) -> None:
        """Zero counters and forget the rate limiter's window (config is left as is)."""
        self.api.traffic.reset()

    def __enter__(self) -> MusicApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the local demo music API in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--albums", type=int, default=600)
    parser.add_argument("--token-ttl", type=float, default=3600)
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    server = MusicApiServer(
        catalog=Catalog(seed=args.seed, albums=args.albums),
        host=args.host,
        port=args.port,
        # Demo-only defaults: this server guards fake data on localhost, nothing real.
        client_id=os.environ.get("MUSIC_API_CLIENT_ID", "demo-client"),
        client_secret=os.environ.get("MUSIC_API_CLIENT_SECRET", "demo-secret"),
        token_ttl=args.token_ttl,
        verbose=args.verbose,
        rate_limit_per_second=args.rate_limit,
    )
    print(f"music API listening on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
