"""moto's server for tests: S3, Kinesis and Glue on a free loopback port, in a child process;
and s3rver, a second S3 implementation, for the S3 file source's tests.

Registered for every test module by `pytest_plugins` in conftest.py: `moto_endpoint` (one
server for the session), `s3rver_endpoint` (likewise; it takes moto's credentials),
`aws_credentials` and `aws_env` (the credentials through the standard AWS chain), `s3` and
`bucket`. A module that wants a server of its own starts one with `running_moto()`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ingestion_platform_tests.servers import free_port, stop_process, wait_listening

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"
S3RVER = Path(__file__).resolve().parent.parent / ".s3rver" / "node_modules" / "s3rver"
# s3rver knows one key pair, S3RVER/S3RVER: moto's is added, so both servers take the same.
S3RVER_MAIN = """
const [module, port, directory] = process.argv.slice(1);
require(module + "/lib/models/account").DUMMY_ACCOUNT.createKeyPair("testing", "testing");
const S3rver = require(module);
new S3rver({ address: "127.0.0.1", port: Number(port), directory, silent: true }).run();
"""


def aws_client(service: str, endpoint: str, config: Config | None = None) -> Any:
    """A boto3 client of `service` at `endpoint`, with moto's credentials and region."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, process, "moto's server")
    return process, f"http://127.0.0.1:{port}"


@contextmanager
def running_moto() -> Iterator[str]:
    """moto's server while the block lasts; yields its endpoint URL."""
    process, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server on a free loopback port, for the whole session."""
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3rver_endpoint() -> Iterator[str]:
    """s3rver on a free loopback port, storing under a temporary folder, for the session."""
    if not S3RVER.exists():
        pytest.fail(f"s3rver is not installed at {S3RVER}; run `make s3rver`")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="s3rver-") as directory:
        process = subprocess.Popen(
            ["node", "-e", S3RVER_MAIN, str(S3RVER), str(port), directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(port, process, "s3rver")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(process)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's credentials through the environment, and no profile that could stand in."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def aws_env(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulator credentials and region through the standard AWS chain (environment variables)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """A boto3 S3 client of moto's server."""
    return aws_client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket on moto's server."""
    name = f"drop-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name
