"""The files' `source_lag` measure on each transport's real peer: the source listed again,
complete files that no landed partition holds, the oldest's mtime; an unreachable server
is named."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import S3FileSource, SftpFileSource
from ingestion_platform_tests.files_helpers import files_lag, keys, rows, s3_source, tick
from ingestion_platform_tests.sources import build_source, materialize
from ingestion_platform_tests.sshd import Sshd

# Put a file at the source: (name, body, seconds ago it was written, or None for now).
Drop = Callable[[str, bytes, float | None], None]


_lag = files_lag


def _figures(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {name: value.value for name, value in evaluation.metadata.items()}


def _ssh_source(tmp_path: Path, server: Sshd, transport: str) -> tuple[dg.Definitions, Drop]:
    attributes = server.attributes(table="orders", settle="2s", transport=transport)
    defs = build_source(SftpFileSource, tmp_path / "partner", attributes)

    def drop(name: str, body: bytes, age: float | None) -> None:
        path = server.root / name
        path.write_bytes(body)
        if age is not None:
            os.utime(path, (time.time() - age, time.time() - age))

    return defs, drop


@pytest.fixture(params=["sftp", "scp", "s3"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dg.Definitions, Drop, bool]:
    """(definitions, how to drop a file, whether a drop's mtime can be set in the past)."""
    if request.param in ("sftp", "scp"):
        server = request.getfixturevalue("sshd" if request.param == "sftp" else "scp_sshd")
        return (*_ssh_source(tmp_path, server, request.param), True)
    endpoint = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("aws_credentials")
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("bucket")
    # An object is whole once it is listed.
    defs = s3_source(tmp_path / "partner", endpoint, bucket, settle="0s")

    def drop(name: str, body: bytes, age: float | None) -> None:
        s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=body)

    return defs, drop, False


def test_a_dropped_file_waits_until_its_partition_lands(
    source: tuple[dg.Definitions, Drop, bool],
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources: dict,
) -> None:
    defs, drop, dated = source
    drop("a.csv", b"id\n1\n2\n", 3600 if dated else None)
    drop("a.csv.part", b"id\n3\n", 3600 if dated else None)  # a temp name is never data

    waiting = _figures(_lag(defs, instance))
    assert (waiting["waiting_files"], waiting["waiting_bytes"]) == (1, 7)
    assert waiting["detail"] == {"oldest_file": "a.csv"}
    assert waiting["oldest_waiting_seconds"] >= (3600 if dated else 0)

    result = tick(defs, instance)
    if dated:  # the sensor sees a file settle for itself
        time.sleep(2.1)
        result = tick(defs, instance, result.cursor)
    (key,) = keys(result)
    assert _figures(_lag(defs, instance))["waiting_files"] == 1  # cut, not landed yet
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id from partner.orders order by id") == [(1,), (2,)]
    landed = _lag(defs, instance)
    assert (landed.passed, _figures(landed)["waiting_files"]) == (True, 0)


def test_an_unreachable_server_is_named_in_the_check(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    defs, drop = _ssh_source(tmp_path, sshd, "sftp")
    sshd.stop()
    started = time.monotonic()
    evaluation = _lag(defs, instance)
    assert time.monotonic() - started < 20
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == (
        f"could not measure the source: source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}):"
        f" cannot reach 127.0.0.1:{sshd.port}: connection refused. Fix: check that the server "
        "is up and that `host` and `port` point at it"
    )


def test_a_file_is_complete_past_the_settle_time_or_with_its_marker(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    defs, drop = _ssh_source(tmp_path, sshd, "sftp")
    drop("young.csv", b"id\n1\n", None)  # written within the settle time (2s)
    drop("old.csv", b"id\n2\n", 60)
    assert _figures(_lag(defs, instance))["detail"] == {"oldest_file": "old.csv"}
    assert _figures(_lag(defs, instance))["waiting_files"] == 1

    attributes = sshd.attributes(table="orders", done_marker=".done")
    marked = build_source(SftpFileSource, tmp_path / "marked", attributes)
    assert _figures(_lag(marked, instance))["waiting_files"] == 0  # old, but no marker
    drop("old.csv.done", b"", None)
    assert _figures(_lag(marked, instance))["detail"] == {"oldest_file": "old.csv"}


@pytest.mark.usefixtures("aws_credentials")
def test_an_unreachable_bucket_endpoint_is_named_in_the_check(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    attributes = {
        "bucket": "drop",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "table": "orders",
    }
    defs = build_source(S3FileSource, tmp_path / "partner", attributes)
    evaluation = _lag(defs, instance)
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == (
        f"could not measure the source: source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}):"
        " cannot reach http://127.0.0.1:9: Could not connect to the endpoint URL: "
        '"http://127.0.0.1:9/drop?versioning". Fix: check `endpoint_url`/`region` and the network'
    )
