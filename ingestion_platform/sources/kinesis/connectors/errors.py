"""Kinesis failures no retry fixed, phrased for the person who declared the source.

Every failure of a call ends here as `StreamUnavailable` (a ConnectionError, which the
components re-raise naming the source and its defs.yaml): never a botocore traceback.
"""

from __future__ import annotations

import re

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from ingestion_platform.sources.kinesis.connectors.retry import http_status, retryable

NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
CREDENTIAL_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)
# What a call may raise once retries are over; anything else is a bug of ours.
CALL_FAILURES = (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)


class StreamUnavailable(ConnectionError):
    """The stream cannot be read: absent, refused credentials, endpoint down or failing."""


def explain(
    error: Exception,
    *,
    operation: str,
    stream: str,
    where: str,
    attempts: int,
    read_timeout: float,
) -> StreamUnavailable:
    """The failure of `operation` (boto's name, `get_records`) as a message with its fix."""
    name = api_name(operation)
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code in NOT_FOUND_CODES:
            return StreamUnavailable(
                f"stream {stream!r} does not exist{where}. Fix: check `stream`, `region` and "
                "`endpoint_url`"
            )
        if code in CREDENTIAL_CODES:
            return StreamUnavailable(
                f"AWS refused the credentials for stream {stream!r}{where} ({code}). Fix: check "
                "the credentials of the AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, …) and their "
                "Kinesis permissions"
            )
        if retryable(error):
            return StreamUnavailable(
                f"Kinesis answered {name} with HTTP {http_status(error)} ({code}: {message}) "
                f"{attempts} times in a row{where}. Fix: the service is failing; re-run the "
                "partition once it answers again, and check the endpoint's health if it persists"
            )
        return StreamUnavailable(
            f"Kinesis refused {name}{where} ({code}: {message}). Fix: check `stream`, `region` "
            "and `endpoint_url`, and that the peer is a Kinesis service"
        )
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError)):
        return StreamUnavailable(
            f"Kinesis did not answer {name} within {read_timeout:g}s (read_timeout_seconds)"
            f"{where}. Fix: check that the endpoint is up and answers, or raise "
            "`read_timeout_seconds`"
        )
    if isinstance(error, ConnectionClosedError):
        return StreamUnavailable(
            f"Kinesis closed the connection during {name} {attempts} times in a row{where}. "
            "Fix: check the endpoint and the network to it"
        )
    if isinstance(error, NoCredentialsError):
        return StreamUnavailable(
            "no AWS credentials found. Fix: set them the standard AWS way (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance role)"
        )
    return StreamUnavailable(
        f"cannot reach Kinesis{where}. Fix: check that the endpoint is up and "
        "`endpoint_url`/`region` point at it"
    )


def api_name(operation: str) -> str:
    """`get_records` -> `GetRecords`, as AWS names the call."""
    return re.sub(r"(?:^|_)([a-z])", lambda m: m.group(1).upper(), operation)
