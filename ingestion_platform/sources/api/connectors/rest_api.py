"""Dagster-free HTTP plumbing for API sources: a rate budget, retries, token refresh, counters.

dlt's rest_api source does the paging and normalising; it accepts the `requests.Session`
it should send through. This module supplies that session, so every request of every
resource of one source shares one budget:

- a rate budget (rate_budget.py, or shared_budget.py across processes) taken for each
  attempt, retries included, that counts requests from their completion so the API's quota
  is never exceeded;
- retries (tenacity) of 429, 5xx and dropped connections, honouring `Retry-After`, and
  giving up after a bounded time with an error that says why;
- one fresh token and one retry when an OAuth2 token expires mid-run; the token request
  itself goes through a session like this one (same budget, same retries, same give-up);
- a check that each successful page really is JSON, so a malformed page fails the run
  instead of landing as nothing;
- counters for the run's metadata.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import pendulum
import requests
import tenacity
from dlt.common.configuration import configspec
from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials

from ingestion_platform.sources.api.connectors.rate_budget import Budget

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(RuntimeError):
    """The API answered in a way the run cannot recover from; `fix` says what to check."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class RequestCounters:
    """What the session saw during one run (each attempt counts as a request)."""

    requests: int = 0
    pages: int = 0
    retries: int = 0
    throttled_429: int = 0
    server_errors_5xx: int = 0
    connection_errors: int = 0
    token_refreshes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@configspec
class RefreshingClientCredentials(OAuth2ClientCredentials):
    """OAuth2 client credentials that renew a little before expiry, and on demand after a 401."""

    def parse_expiration_in_seconds(self, response_json: Any) -> int:
        expires_in = float(response_json.get("expires_in", self.default_token_expiration))
        # Renew at 90% of the lifetime: a token must not expire between check and arrival.
        return expires_in * 0.9  # type: ignore[return-value]

    def obtain_token(self) -> None:
        response = self.session.post(self.access_token_url, **self.build_access_token_request())
        if response.status_code in (400, 401, 403):
            raise ApiError(
                f"the token endpoint {self.access_token_url} rejected the client credentials "
                f"(HTTP {response.status_code})",
                "check auth.client_id, auth.client_secret and auth.token_url",
            )
        response.raise_for_status()
        response_json = response.json()
        self.parse_native_representation(self.parse_access_token(response_json))
        seconds = self.parse_expiration_in_seconds(response_json)
        self.token_expiry = pendulum.now().add(microseconds=int(seconds * 1_000_000))

    def invalidate(self) -> None:
        self.access_token = None


class BudgetedSession(requests.Session):
    """A session that spends from a rate budget, retries what is transient and counts it all."""

    def __init__(
        self,
        *,
        budget: Budget | None,
        give_up_after_seconds: float,
        timeout_seconds: float = 60,
        refreshable_auth: RefreshingClientCredentials | None = None,
        counters: RequestCounters | None = None,
    ) -> None:
        super().__init__()
        self.counters = counters or RequestCounters()
        self.refreshable_auth = refreshable_auth
        self._budget = budget
        self._give_up_after = give_up_after_seconds
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._counts_pages = True

    def for_tokens(self) -> BudgetedSession:
        """A session for the token endpoint: the same budget, retries and request count."""
        tokens = BudgetedSession(
            budget=self._budget,
            give_up_after_seconds=self._give_up_after,
            timeout_seconds=self._timeout,
            counters=self.counters,
        )
        tokens._counts_pages = False
        tokens._lock = self._lock
        return tokens

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        # dlt's response hooks raise on any error status; run them once, after the retries.
        hooks, request.hooks = request.hooks, requests.hooks.default_hooks()
        started = time.monotonic()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(requests.ConnectionError)
            | tenacity.retry_if_exception_type(requests.Timeout)
            | tenacity.retry_if_result(lambda response: response.status_code in RETRY_STATUSES),
            wait=_wait_retry_after_or_backoff,
            stop=tenacity.stop_before_delay(self._give_up_after),
            before_sleep=lambda _state: self._count("retries"),
            retry_error_callback=lambda state: self._give_up(request, state, started),
        )
        response = retrying(self._send_once, request, **kwargs)
        auth = self.refreshable_auth
        if response.status_code == 401 and auth is not None:
            # The token expired on the way; fetch a new one and send once more.
            auth.invalidate()
            self._count("token_refreshes")
            response = retrying(self._send_once, auth(request), **kwargs)
        if response.ok:
            self._check_json(request, response)
        return requests.hooks.dispatch_hook("response", hooks, response, **kwargs)

    def _send_once(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        auth = self.refreshable_auth
        if auth is not None and auth.is_token_expired():
            # The token was attached before a retry's wait and has aged since. (Renewing
            # here, outside the slot: the token request takes a slot of its own.)
            auth(request)
        with self._budget.slot() if self._budget else contextlib.nullcontext():
            self._count("requests")
            try:
                response = super().send(request, **kwargs)
                # Read the body inside the slot: the request is complete only once it is read.
                _ = response.content
            except (requests.ConnectionError, requests.Timeout):
                self._count("connection_errors")
                raise
        if response.status_code == 429:
            self._count("throttled_429")
        elif response.status_code >= 500:
            self._count("server_errors_5xx")
        elif response.ok and self._counts_pages:
            self._count("pages")
        return response

    def _check_json(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type:
            raise ApiError(
                f"{_path(request)} answered HTTP {response.status_code} with content type "
                f"{content_type or '(none)'}, expected JSON; nothing was landed",
                "check base_url and the resource's endpoint.path",
            )
        try:
            response.json()
        except ValueError as error:
            raise ApiError(
                f"{_path(request)} answered with malformed JSON ({error}); nothing was landed",
                "run it again; if it persists, the API is sending broken pages",
            ) from None

    def _give_up(
        self, request: requests.PreparedRequest, state: tenacity.RetryCallState, started: float
    ) -> requests.Response:
        waited = time.monotonic() - started
        outcome = state.outcome
        if outcome is not None and outcome.failed:
            reason = connection_failure(outcome.exception())  # type: ignore[arg-type]
        else:
            reason = f"HTTP {outcome.result().status_code}" if outcome else "no answer"
        raise ApiError(
            f"gave up on {_path(request)} after {state.attempt_number} attempts in "
            f"{waited:.0f}s (last: {reason})",
            "check that the API answers at base_url (and auth.token_url); retries stop "
            "after limits.give_up_after",
        )

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)


def _wait_retry_after_or_backoff(state: tenacity.RetryCallState) -> float:
    outcome = state.outcome
    if outcome is not None and not outcome.failed:
        retry_after = outcome.result().headers.get("Retry-After", "")
        if retry_after.strip().isdigit():
            return float(retry_after)
    return min(0.25 * 2 ** (state.attempt_number - 1), 30.0)


def connection_failure(error: BaseException) -> str:
    """What went wrong with a connection, in words: `connection refused`, `timed out`.

    requests wraps the operating system's error in three layers of urllib3 text (pool
    objects, addresses, "Max retries exceeded" although nothing was retried there).
    """
    if isinstance(error, requests.Timeout):
        return "timed out"
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror[0].lower() + current.strerror[1:]
        if type(current).__name__ == "RemoteDisconnected":
            return "the server closed the connection without answering"
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
    return type(error).__name__


def _path(request: requests.PreparedRequest) -> str:
    """The URL without its query string, which may carry an API key."""
    return (request.url or "").split("?", 1)[0]
