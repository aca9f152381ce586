"""The S3 downloader against moto's real server: parts, versions, changes and dropped links."""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ingestion_platform.sources.files.connectors.s3_download import (
    DownloadFailed,
    MiB,
    ObjectChanged,
    download_object,
)
from ingestion_platform_tests.flaky_proxy import FlakyProxy
from ingestion_platform_tests.moto_server import running_moto

LOGGER = "ingestion_platform.sources.files.connectors.s3_download"


pytestmark = pytest.mark.usefixtures("aws_env")  # moto's credentials and region, from the env
# Short timeouts: a test that hangs on a socket should fail in seconds, not in a minute.
CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3}, read_timeout=10)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, config=CLIENT_CONFIG)


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """moto's server on a free loopback port, for this module."""
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto_s3: str) -> str:
    name = f"drop-{uuid.uuid4().hex[:12]}"
    s3_client(moto_s3).create_bucket(Bucket=name)
    return name


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(client: Any, bucket: str, key: str, data: bytes) -> dict[str, Any]:
    """Put `data` and return the object as a listing would see it."""
    client.put_object(Bucket=bucket, Key=key, Body=data)
    head = client.head_object(Bucket=bucket, Key=key)
    return {"size": head["ContentLength"], "etag": head["ETag"].strip('"')}


def record_gets(client: Any) -> list[dict[str, Any]]:
    """The parameters of every GetObject `client` sends, appended as they go."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: calls.append(dict(params))
    )
    return calls


def test_parts_are_fetched_in_parallel_ranges_and_reassembled(
    moto_s3: str, bucket: str, tmp_path: Path
) -> None:
    client = s3_client(moto_s3)
    data = payload(20 * 1000 * 1000, seed=1)
    listed = put(client, bucket, "in/big.bin", data)
    gets = record_gets(client)
    progress: list[int] = []
    target = tmp_path / "big.bin"

    download_object(client, bucket, "in/big.bin", str(target), **listed, version_id=None,
                    progress=progress.append, part_size=4 * MiB, concurrency=3)  # fmt: skip

    assert digest(target.read_bytes()) == digest(data)
    assert sorted(call["Range"] for call in gets) == sorted(
        f"bytes={start}-{min(start + 4 * MiB, len(data)) - 1}"
        for start in range(0, len(data), 4 * MiB)
    )
    assert all(call["IfMatch"] == f'"{listed["etag"]}"' for call in gets)
    assert len(progress) == 5 and progress == sorted(progress) and progress[-1] == len(data)


def test_a_small_object_takes_one_get(moto_s3: str, bucket: str, tmp_path: Path) -> None:
    client = s3_client(moto_s3)
    data = payload(300_000, seed=2)
    listed = put(client, bucket, "small.csv", data)
    gets = record_gets(client)
    target = tmp_path / "small.csv"

    download_object(client, bucket, "small.csv", str(target), **listed, version_id=None)

    assert digest(target.read_bytes()) == digest(data)
    assert len(gets) == 1 and "Range" not in gets[0]


def test_an_overwritten_object_raises_object_changed(
    moto_s3: str, bucket: str, tmp_path: Path
) -> None:
    client = s3_client(moto_s3)
    listed = put(client, bucket, "in/orders.csv", payload(9 * MiB, seed=3))
    client.put_object(Bucket=bucket, Key="in/orders.csv", Body=payload(9 * MiB, seed=4))
    target = tmp_path / "orders.csv"

    with pytest.raises(ObjectChanged, match=f"s3://{bucket}/in/orders.csv .*HTTP 412"):
        download_object(client, bucket, "in/orders.csv", str(target), **listed, version_id=None,
                        part_size=4 * MiB)  # fmt: skip
    assert not target.exists()

    client.delete_object(Bucket=bucket, Key="in/orders.csv")
    with pytest.raises(ObjectChanged, match=f"s3://{bucket}/in/orders.csv .*HTTP 404"):
        download_object(client, bucket, "in/orders.csv", str(target), **listed, version_id=None)


def test_a_version_id_reads_that_version_after_an_overwrite(
    moto_s3: str, bucket: str, tmp_path: Path
) -> None:
    client = s3_client(moto_s3)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = payload(10 * MiB + 7, seed=5)
    version_id = client.put_object(Bucket=bucket, Key="v.bin", Body=old)["VersionId"]
    client.put_object(Bucket=bucket, Key="v.bin", Body=payload(10 * MiB + 7, seed=6))
    gets = record_gets(client)
    target = tmp_path / "v.bin"

    download_object(client, bucket, "v.bin", str(target), len(old), etag=None,
                    version_id=version_id, part_size=4 * MiB)  # fmt: skip

    assert digest(target.read_bytes()) == digest(old)
    assert len(gets) == 3 and all(call["VersionId"] == version_id for call in gets)


def test_a_connection_reset_mid_body_resumes_from_the_byte_reached(
    moto_s3: str, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(12 * MiB, seed=7)
    listed = put(s3_client(moto_s3), bucket, "flaky.bin", data)
    target = tmp_path / "flaky.bin"
    port = int(moto_s3.rsplit(":", 1)[1])
    caplog.set_level(logging.WARNING, logger=LOGGER)

    with FlakyProxy(port, reset_after=MiB + MiB // 2, resets=2) as proxy:
        client = s3_client(proxy.endpoint)
        gets = record_gets(client)
        download_object(client, bucket, "flaky.bin", str(target), **listed, version_id=None,
                        part_size=4 * MiB, concurrency=2)  # fmt: skip

    assert digest(target.read_bytes()) == digest(data)
    assert proxy.reset_count == 2
    retries = [r for r in caplog.records if r.name == LOGGER]
    assert len(retries) == 2
    assert all(r.args[0] == f"s3://{bucket}/flaky.bin" for r in retries)
    # Each retry asked only for the rest of its part, from the byte the log names (a
    # mid-part byte: the proxy forwarded 1.5 MiB, read 1 MiB at a time, before resetting).
    offsets = sorted(r.args[1] for r in retries)
    assert all(offset % (4 * MiB) > 0 for offset in offsets)
    resumed = sorted(c["Range"] for c in gets if int(c["Range"][6:].split("-")[0]) in offsets)
    assert resumed == [f"bytes={o}-{(o // (4 * MiB) + 1) * 4 * MiB - 1}" for o in offsets]
    assert len(gets) == 3 + 2


def test_with_one_attempt_a_reset_fails_naming_the_object(
    moto_s3: str, bucket: str, tmp_path: Path
) -> None:
    listed = put(s3_client(moto_s3), bucket, "flaky.bin", payload(2 * MiB, seed=8))
    target = tmp_path / "flaky.bin"
    port = int(moto_s3.rsplit(":", 1)[1])

    with FlakyProxy(port, reset_after=256 * 1024, resets=100) as proxy:
        with pytest.raises(DownloadFailed) as failure:
            download_object(s3_client(proxy.endpoint), bucket, "flaky.bin", str(target),
                            **listed, version_id=None, attempts=1)  # fmt: skip

    assert proxy.reset_count == 1
    message = str(failure.value)
    assert message.startswith(f"s3://{bucket}/flaky.bin: gave up at byte ")
    assert "of bytes 0-2097151 after 1 attempt(s)" in message
    assert "last error:" in message and "Connection reset by peer" in message
    assert not target.exists()
