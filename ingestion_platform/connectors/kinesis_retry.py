"""Retries for Kinesis calls: throttling and dropped connections, with backoff and jitter.

Kinesis throttles per shard (ProvisionedThroughputExceededException) and per account
(LimitExceededException on control calls); many readers retrying in step would collide
again, so each delay is drawn uniformly below an exponentially growing cap ("full jitter").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

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


def call_with_backoff(
    method: Callable[..., dict[str, Any]],
    kwargs: dict[str, Any],
    backoff: Backoff,
    on_retry: Callable[[], None],
) -> dict[str, Any]:
    """Call `method`, retrying throttling errors and dropped connections."""
    for attempt in range(backoff.attempts):
        try:
            return method(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code not in THROTTLING_CODES or attempt == backoff.attempts - 1:
                raise
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError):
            if attempt == backoff.attempts - 1:
                raise
        on_retry()
        backoff.sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")
