"""Download one S3 object exactly as listed: parallel ranged GETs, bounded memory, retries.

Every GET names the listed version, by `VersionId` or by `IfMatch` on the listed ETag, so
an object overwritten mid-download fails with ObjectChanged instead of splicing two
versions. A part whose connection drops mid-body is asked for again from the byte it
reached. Each worker streams its part in READ_CHUNK reads into a pre-sized file with
`os.pwrite`, so memory stays at about `concurrency × READ_CHUNK` whatever the size.

Against boto3's transfer manager (`download_file`, tuned TransferConfig) on moto's server,
300 MB, 2 busy cores (bench/s3.py, 2026-11-28): within the noise at equal part size and
threads (64 MB x 8, 4 alternated rounds: 161-231 against 145-201 MB/s, client CPU 0.8
against 1.0-1.25 s; the --sweep grid 8-64 MB x 4-10 likewise). We keep our own for
exactness: s3transfer sends IfMatch with its own HeadObject's ETag, not the listed one, so
an overwrite between listing and download lands unnoticed, and it restarts a dropped part
from the part's first byte, without backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import IncompleteRead
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# moto reads the whole object for every ranged GET, so there fewer, bigger parts win (300 MB:
# 16 MB parts 35-57 MB/s, 64 MB 73-184, one GET 236-298); on S3 a GET costs only its range,
# and 64 MB x 8 still keeps 8 streams busy from 512 MB up. 8 threads fit botocore's pool of 10.
PART_SIZE = 64 * MiB
CONCURRENCY = 8
READ_CHUNK = 1 * MiB

# A connection that drops, stalls or ends early: worth asking again from where it stopped.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ResponseStreamingError,
    ReadTimeoutError,
    ConnectionClosedError,
    EndpointConnectionError,
    ConnectTimeoutError,
    IncompleteReadError,
    ProtocolError,
    Urllib3ReadTimeoutError,
    IncompleteRead,
    ConnectionError,
    TimeoutError,
)
# The listed version is gone or different: 404 (deleted), 412 (IfMatch), 416 (shrunk).
CHANGED_STATUSES = frozenset({404, 412, 416})


class DownloadFailed(ConnectionError):
    """The connection kept dropping: every attempt at a part failed. The sources name it."""


class ObjectChanged(RuntimeError):
    """The object is no longer the listed version (HTTP 412 on IfMatch, or 404)."""


@dataclass
class _Part:
    """Bytes [start, end) of the object; `position` is the first byte not yet written."""

    start: int
    end: int
    whole: bool  # the whole object: its first GET carries no Range
    position: int = field(init=False)

    def __post_init__(self) -> None:
        self.position = self.start


class _Download:
    """The state the part workers share: the open file, the stop flag and the byte count."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        fd: int,
        version: dict[str, str],
        attempts: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.fd = fd
        self.version = version
        self.attempts = attempts
        self.progress = progress
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.received = 0

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def part(self, start: int, end: int, whole: bool) -> None:
        """Write bytes [start, end) at their offset, retrying dropped connections from there."""
        part = _Part(start, end, whole)
        for attempt in range(1, self.attempts + 1):
            try:
                self._stream(part)
                break
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status in CHANGED_STATUSES:
                    raise ObjectChanged(
                        f"{self.name} is no longer the listed version ({self._listed()}): "
                        f"HTTP {status} {error.response.get('Error', {}).get('Code', '')}"
                    ) from error
                if status < 500:
                    raise
                last: BaseException = error
            except TRANSIENT_ERRORS as error:
                last = error
            if self.stop.is_set():
                return
            if attempt == self.attempts:
                raise DownloadFailed(
                    f"{self.name}: gave up at byte {part.position} of bytes {start}-{end - 1} "
                    f"after {self.attempts} attempt(s); last error: {last!r}"
                ) from last
            # Short and jittered: parts dropped by one network blip must not retry in step.
            delay = min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
            logger.warning(
                "%s: connection lost at byte %d (attempt %d of %d), retrying from there in "
                "%.2fs: %r",
                self.name,
                part.position,
                attempt,
                self.attempts,
                delay,
                last,
            )
            if self.stop.wait(delay):
                return
        if part.position == end:
            with self.lock:
                self.received += end - start
                if self.progress is not None:
                    self.progress(self.received)

    def _stream(self, part: _Part) -> None:
        """One GET from `part.position`, advancing it as bytes land (to `end` unless stopped)."""
        request = {"Bucket": self.bucket, "Key": self.key, **self.version}
        if not (part.whole and part.position == 0):
            request["Range"] = f"bytes={part.position}-{part.end - 1}"
        response = self.client.get_object(**request)
        body = response["Body"]
        try:
            if response["ContentLength"] != part.end - part.position:
                raise ObjectChanged(
                    f"{self.name} is no longer the listed version ({self._listed()}): asked "
                    f"for {part.end - part.position} bytes from byte {part.position}, "
                    f"got {response['ContentLength']}"
                )
            while part.position < part.end and not self.stop.is_set():
                # read(), not readinto(): urllib3's readinto reads then copies (more CPU).
                data = body.read(min(READ_CHUNK, part.end - part.position))
                if not data:
                    raise IncompleteRead(b"", part.end - part.position)
                os.pwrite(self.fd, data, part.position)
                part.position += len(data)
        finally:
            body.close()

    def _listed(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.version.items()) or "size"


def download_object(
    client: Any,
    bucket: str,
    key: str,
    local_path: str,
    size: int,
    etag: str | None,
    version_id: str | None,
    progress: Callable[[int], None] | None = None,
    part_size: int = PART_SIZE,
    concurrency: int = CONCURRENCY,
    attempts: int = 5,
) -> None:
    """Download the listed version of s3://bucket/key (`size` bytes) to `local_path`.

    `client` should allow `concurrency` pooled connections (botocore's `max_pool_connections`,
    10 by default). On any error the partial file is removed.
    """
    if version_id:
        version = {"VersionId": version_id}
    elif etag:
        version = {"IfMatch": f'"{etag}"'}
    else:
        version = {}
    parts = [(start, min(start + part_size, size)) for start in range(0, size, part_size)]
    fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    job = _Download(client, bucket, key, fd, version, attempts, progress)
    try:
        os.ftruncate(fd, size)
        if len(parts) <= 1:
            job.part(0, size, whole=True)
        else:
            _run_parts(job, parts, concurrency)
        if job.received != size or os.fstat(fd).st_size != size:
            raise ObjectChanged(f"{job.name}: received {job.received} bytes, listed {size}")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path)
        raise
    os.close(fd)


def _run_parts(job: _Download, parts: list[tuple[int, int]], concurrency: int) -> None:
    """Run the parts on a pool; the first failure stops the others and is raised."""
    pool = ThreadPoolExecutor(min(concurrency, len(parts)), thread_name_prefix="s3-download")
    try:
        futures = [pool.submit(job.part, start, end, False) for start, end in parts]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        job.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
