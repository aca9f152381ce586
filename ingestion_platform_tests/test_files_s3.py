"""S3 file sources on moto's server: pick-up once, overwrites, prefixes, late keys, formats,
quarantine, replay of exact versions, and the errors a user sees. Tests marked
`BOTH_S3_SERVERS` run against s3rver too, a second S3 implementation (it has no versioning
and cannot store a key with `//` or `..`, so those two tests are moto's alone)."""

from __future__ import annotations

import gzip
import io
import json
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import S3FileSource
from ingestion_platform_tests.files_helpers import keys, rows, s3_source, tick
from ingestion_platform_tests.moto_server import aws_client
from ingestion_platform_tests.sources import build_source, failure_message, materialize

# The servers' credentials from the environment (moto_server.py).
pytestmark = pytest.mark.usefixtures("aws_credentials")
BOTH_S3_SERVERS = pytest.mark.parametrize("s3_endpoint", ["moto", "s3rver"], indirect=True)


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest) -> str:
    """moto's server; s3rver's for a test marked `BOTH_S3_SERVERS`."""
    server = getattr(request, "param", "moto")
    return request.getfixturevalue(f"{server}_endpoint")


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return aws_client("s3", s3_endpoint)


def _defs(tmp_path: Path, endpoint: str, bucket: str, **extra: object) -> dg.Definitions:
    return s3_source(tmp_path / "partner_s3", endpoint, bucket, **extra)


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@BOTH_S3_SERVERS
def test_each_new_object_is_cut_once_and_lands_exactly(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance, warehouse, resources
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/orders_1.csv", Body=b"id,amount\n1,2.5\n2,3.5\n")
    s3.put_object(Bucket=bucket, Key="incoming/readme.txt", Body=b"not data")
    s3.put_object(Bucket=bucket, Key="elsewhere/orders_9.csv", Body=b"id,amount\n9,9\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, patterns=["orders_*.csv"])
    first = tick(defs, instance)
    (key,) = keys(first)
    assert key.startswith("orders_1.csv@")
    assert keys(tick(defs, instance, first.cursor)) == []  # never twice

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, amount, _file, _row from partner_s3.orders") == [
        (1, 2.5, "orders_1.csv", 1),
        (2, 3.5, "orders_1.csv", 2),
    ]
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        2,
        2,
        0,
    )
    assert metadata["bytes_transferred"] == len(b"id,amount\n1,2.5\n2,3.5\n")
    assert metadata["transfer_mb_per_s"] >= 0
    (listed,) = metadata["files"]
    assert listed["path"] == "orders_1.csv"
    # Re-materialising replaces exactly the slice: still two rows.
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select count(*) from partner_s3.orders") == [(2,)]


@BOTH_S3_SERVERS
def test_the_cursor_stays_one_key_and_nested_keys_are_found(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance
) -> None:
    for day in range(1, 4):
        s3.put_object(Bucket=bucket, Key=f"incoming/2026/11/0{day}/a.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket)
    first = tick(defs, instance)
    # Three files at once: one partition holds them (core/backlog.py).
    assert [k.split("@")[0] for k in keys(first)] == ["2026_11_01_a.csv+2"]
    cursor = json.loads(first.cursor or "{}")
    assert cursor["start_after"] == "2026/11/03/a.csv"
    assert len(first.cursor or "") < 200
    s3.put_object(Bucket=bucket, Key="incoming/2026/11/04/a.csv", Body=b"id\n1\n")
    second = tick(defs, instance, first.cursor)
    assert [k.split("@")[0] for k in keys(second)] == ["2026_11_04_a.csv"]


@BOTH_S3_SERVERS
def test_a_key_written_late_under_an_earlier_name_is_found_by_the_full_listing(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/b.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, full_listing_every="2s")
    first = tick(defs, instance)
    assert [k.split("@")[0] for k in keys(first)] == ["b.csv"]
    s3.put_object(Bucket=bucket, Key="incoming/a.csv", Body=b"id\n2\n")
    # Between full listings a tick lists only keys after the cursor's `b.csv` ...
    second = tick(defs, instance, first.cursor)
    assert keys(second) == []
    time.sleep(2.1)
    # ... and the next full listing finds `a.csv`, without cutting `b.csv` again.
    third = tick(defs, instance, second.cursor)
    assert [k.split("@")[0] for k in keys(third)] == ["a.csv"]


@BOTH_S3_SERVERS
def test_a_file_waiting_for_its_marker_holds_the_cursor(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance
) -> None:
    defs = _defs(tmp_path, s3_endpoint, bucket, done_marker=".done")
    s3.put_object(Bucket=bucket, Key="incoming/a.csv", Body=b"id\n1\n")
    s3.put_object(Bucket=bucket, Key="incoming/b.csv", Body=b"id\n2\n")
    s3.put_object(Bucket=bucket, Key="incoming/b.csv.done", Body=b"")
    first = tick(defs, instance)
    assert [k.split("@")[0] for k in keys(first)] == ["b.csv"]
    assert json.loads(first.cursor or "{}")["start_after"] is None  # a.csv still waits
    s3.put_object(Bucket=bucket, Key="incoming/a.csv.done", Body=b"")
    second = tick(defs, instance, first.cursor)
    assert [k.split("@")[0] for k in keys(second)] == ["a.csv"]


@BOTH_S3_SERVERS
def test_an_overwritten_object_lands_again_and_the_old_partition_cannot_replay(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance, warehouse, resources
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, full_listing_every="0s")
    first = tick(defs, instance)
    (old,) = keys(first)
    materialize(defs, partition_key=old, resources=resources, instance=instance)
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n2\n")
    second = tick(defs, instance, first.cursor)
    (new,) = keys(second)
    assert new != old
    materialize(defs, partition_key=new, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _batch_key from partner_s3.orders order by id") == [
        (1, old),
        (2, new),
    ]

    replay = materialize(
        defs, partition_key=old, resources=resources, instance=instance, raise_on_error=False
    )
    assert not replay.success
    message = failure_message(replay)
    assert "orders.csv changed since it was landed (ETag " in message
    assert "so this one cannot be replayed" in message
    assert rows(warehouse, "select count(*) from partner_s3.orders") == [(2,)]


def test_a_versioned_bucket_replays_the_exact_version(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance, warehouse, resources
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, full_listing_every="0s")
    first = tick(defs, instance)
    (old,) = keys(first)
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n2\n3\n")
    (new,) = keys(tick(defs, instance, first.cursor))
    materialize(defs, partition_key=old, resources=resources, instance=instance)
    materialize(defs, partition_key=new, resources=resources, instance=instance)
    # The old partition reads its own version, though the object was overwritten before.
    assert rows(warehouse, "select id, _batch_key from partner_s3.orders order by id") == [
        (1, old),
        (2, new),
        (3, new),
    ]


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("orders.csv", b"id,name\n1,a\n2,b\n"),
        ("orders.csv.gz", gzip.compress(b"id,name\n1,a\n2,b\n")),
        ("orders.jsonl", b'{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n'),
        ("orders.parquet", _parquet(pa.table({"id": [1, 2], "name": ["a", "b"]}))),
    ],
    # Named by file: gzip stamps the time into its bytes, and xdist's workers must collect
    # the same test ids.
    ids=["csv", "csv.gz", "jsonl", "parquet"],
)
@BOTH_S3_SERVERS
def test_each_format_lands_exactly(
    tmp_path: Path,
    s3_endpoint: str,
    s3: Any,
    bucket: str,
    instance,
    warehouse: Warehouse,
    resources,
    name: str,
    body: bytes,
) -> None:
    s3.put_object(Bucket=bucket, Key=f"incoming/{name}", Body=body)
    defs = _defs(tmp_path, s3_endpoint, bucket)
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, name from partner_s3.orders order by id") == [
        (1, "a"),
        (2, "b"),
    ]


@BOTH_S3_SERVERS
def test_bad_rows_are_quarantined_and_the_counts_reconcile(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance, warehouse, resources
) -> None:
    s3.put_object(
        Bucket=bucket, Key="incoming/orders.csv", Body=b"id,amount\n1,2.5\n2,lots\n3,4.0\n"
    )
    defs = _defs(tmp_path, s3_endpoint, bucket, columns={"id": "INTEGER", "amount": "DOUBLE"})
    (key,) = keys(tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        3,
        2,
        1,
    )
    assert rows(warehouse, "select id from partner_s3.orders order by id") == [(1,), (3,)]
    assert rows(warehouse, "select count(*) from partner_s3._quarantine") == [(1,)]


@BOTH_S3_SERVERS
def test_archive_after_landing_moves_the_object_and_a_replay_reads_the_copy(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance, warehouse, resources
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n1\n2\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, after_landing="archive")
    first = tick(defs, instance)
    (key,) = keys(first)
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="incoming/")["Contents"]
    (archived,) = [o["Key"] for o in listed]  # named per version: orders.csv.<mtime>-<hash>
    assert archived.startswith("incoming/.archive/orders.csv.")
    assert keys(tick(defs, instance, first.cursor)) == []  # the archive is not data
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id from partner_s3.orders order by id") == [(1,), (2,)]

    # A re-upload is archived beside the first copy, never onto it: both replay exactly.
    s3.put_object(Bucket=bucket, Key="incoming/orders.csv", Body=b"id\n7\n8\n9\n")
    (again,) = keys(tick(defs, instance))
    materialize(defs, partition_key=again, resources=resources, instance=instance)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="incoming/")["Contents"]
    assert len(listed) == 2 and archived in [o["Key"] for o in listed]
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id from partner_s3.orders order by id") == [
        (1,), (2,), (7,), (8,), (9,)
    ]  # fmt: skip


@BOTH_S3_SERVERS
def test_a_missing_bucket_and_missing_credentials_fail_the_tick_with_the_fix(
    tmp_path: Path, s3_endpoint: str, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = _defs(tmp_path, s3_endpoint, "no-such-bucket")
    with pytest.raises(Exception) as missing:
        tick(defs, instance)
    assert str(missing.value).endswith(
        f"bucket 'no-such-bucket' does not exist at {s3_endpoint}. Fix: create it or fix `bucket`"
    )
    assert "partner_s3/defs.yaml" in str(missing.value)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(Exception) as anonymous:
        tick(defs, instance)
    assert "no AWS credentials found. Fix: set AWS_ACCESS_KEY_ID" in str(anonymous.value)


def test_a_declared_path_is_refused_with_the_field_to_use(tmp_path: Path) -> None:
    with pytest.raises(Exception) as error:
        build_source(S3FileSource, tmp_path / "wrong", {"bucket": "b", "path": "incoming/"})
    assert "an S3 source reads `prefix`" in str(error.value)
    assert "prefix: incoming/" in str(error.value)


@BOTH_S3_SERVERS
def test_time_batches_wait_for_the_window_of_the_objects_last_modified(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/a.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket, batch={"every": "day", "start": "2026-01-01"})
    first = tick(defs, instance)
    # Written today: its day's window is still open, so nothing is cut and the cursor does
    # not move past it.
    assert keys(first) == []
    assert json.loads(first.cursor or "{}")["start_after"] is None
    written = s3.head_object(Bucket=bucket, Key="incoming/a.csv")["LastModified"]
    tomorrow = (written.astimezone(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 00:00")
    assert first.skip_reason is not None
    assert first.skip_reason.skip_message == (
        "no new partition: 1 complete file(s) not yet cut, 0 settling; 1 file(s) wait for "
        "their window to close "
        f"(the first at {tomorrow} UTC)"
    )


def test_keys_that_could_leave_the_staging_folder_are_refused_and_reported(
    tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str, instance
) -> None:
    s3.put_object(Bucket=bucket, Key="incoming/../escape.csv", Body=b"id\n1\n")
    s3.put_object(Bucket=bucket, Key="incoming//double.csv", Body=b"id\n1\n")
    s3.put_object(Bucket=bucket, Key="incoming/fine.csv", Body=b"id\n1\n")
    defs = _defs(tmp_path, s3_endpoint, bucket)
    result = tick(defs, instance)
    assert [k.split("@")[0] for k in keys(result)] == ["fine.csv"]
    (request,) = result.run_requests or []
    assert request.tags["ingestion_platform/refused_names"] == "2"
    second = tick(defs, instance, result.cursor)
    assert second.skip_reason is not None
    assert second.skip_reason.skip_message.endswith(
        "2 unsafe name(s) refused, e.g. '../escape.csv'"
    )
