"""Retries for Kinesis calls: throttling, server errors and dropped connections, with backoff.

Kinesis throttles per shard (ProvisionedThroughputExceededException) and per account
(LimitExceededException on control calls); many readers retrying in step would collide
again, so each delay is drawn uniformly below an exponentially growing cap ("full jitter").
Any HTTP 5xx is retried whatever its error code says: peers spell their internal failures
differently (`500`, `InternalFailure`, `InternalServerError`, …). A call left unanswered
past the client's read timeout is not retried: a hung peer would otherwise hold the run
for ten timeouts in a row.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS's recommendation for throttled callers)."""

    attempts: int = 10
    base_seconds: float = 0.1
    cap_seconds: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


def http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def retryable(error: ClientError) -> bool:
    """Throttling, or any server-side (5xx) failure."""
    code = error.response.get("Error", {}).get("Code", "")
    return code in THROTTLING_CODES or http_status(error) >= 500


def call_with_backoff(
    method: Callable[..., dict[str, Any]],
    kwargs: dict[str, Any],
    backoff: Backoff,
    on_retry: Callable[[], None],
) -> dict[str, Any]:
    """Call `method`, retrying throttling, server errors and dropped connections."""
    for attempt in range(backoff.attempts):
        try:
            return method(**kwargs)
        except ClientError as error:
            if not retryable(error) or attempt == backoff.attempts - 1:
                raise
        except (EndpointConnectionError, ConnectionClosedError):
            if attempt == backoff.attempts - 1:
                raise
        on_retry()
        backoff.sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")
