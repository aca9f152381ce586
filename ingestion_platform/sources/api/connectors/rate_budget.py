"""A request budget that cannot be exceeded at the server, whatever the network's jitter.

An API counts a request when it arrives, which is some time after the client decided to
send it. Budgets that stamp the decision (pyrate-limiter, token buckets) can therefore see
two requests `interval` apart that the server sees closer together, and get a 429; adding
a safety margin only makes that less likely and every run slower.

This budget counts each request from when its response *completed* (after the server
stamped it), and counts requests still in flight as taking a slot. Then for any window the
server looks at, every request it stamped inside that window was either still in flight or
completed inside it when the next one was allowed, so at most `limit` fit: exact, with no
margin. No library we found counts that way, hence these few lines.

`RateBudget` keeps that state in memory, for the threads of one process;
`shared_budget.SharedRateBudget` keeps the same state in a file, for every process of a source.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Rate:
    """At most `limit` requests in any `interval_seconds`."""

    limit: int
    interval_seconds: float


class Budget(Protocol):
    """Anything that holds one request's slot while it is sent and its response read."""

    def slot(self) -> AbstractContextManager[None]: ...


def rates_per_second(
    requests_per_second: float | None,
    requests_per_minute: int | None = None,
    burst: int | None = None,
) -> list[Rate]:
    """`burst` requests per `burst / requests_per_second` seconds, and/or per minute."""
    rates = []
    if requests_per_second:
        limit = burst or max(1, int(requests_per_second))
        rates.append(Rate(limit, limit / requests_per_second))
    if requests_per_minute:
        rates.append(Rate(requests_per_minute, 60.0))
    return rates


def wait_seconds(
    rates: list[Rate], completed: Iterable[float], in_flight: int, now: float
) -> float:
    """0 if a request may start at `now`, else how long until a slot may free up.

    `completed` holds completion stamps, oldest first (only the newest max(limit) matter).
    """
    stamps = list(completed)
    wait = 0.0
    for rate in rates:
        window_start = now - rate.interval_seconds
        recent = [done for done in stamps if done > window_start]
        excess = len(recent) + in_flight - rate.limit + 1
        if excess <= 0:
            continue
        if excess <= len(recent):
            # The excess-th oldest completion must leave the window first.
            wait = max(wait, recent[excess - 1] - window_start)
        else:
            # Only a request in flight can free a slot; its completion ends the wait.
            wait = max(wait, rate.interval_seconds)
    return wait


class RateBudget:
    """Blocks each request until every rate has room for it; thread-safe, one process."""

    def __init__(self, rates: list[Rate]) -> None:
        self._rates = rates
        self._completed: deque[float] = deque(maxlen=max(rate.limit for rate in rates))
        self._in_flight = 0
        self._changed = threading.Condition()

    @classmethod
    def per_second(
        cls,
        requests_per_second: float | None,
        requests_per_minute: int | None = None,
        burst: int | None = None,
    ) -> RateBudget | None:
        rates = rates_per_second(requests_per_second, requests_per_minute, burst)
        return cls(rates) if rates else None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot while one request is sent and its response read."""
        with self._changed:
            while (wait := self._wait(time.monotonic())) > 0:
                self._changed.wait(wait)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._completed.append(time.monotonic())
                self._changed.notify_all()

    def _wait(self, now: float) -> float:
        return wait_seconds(self._rates, self._completed, self._in_flight, now)
