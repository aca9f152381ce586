"""S3 downloads side by side, on moto's server: boto3's transfer manager, the platform's
downloader and a whole landing.

    .venv/bin/python -m bench.s3 [--rows 5000000] [--repeat 3] [--sweep]

One CSV object (~300 MB at the default rows, 4 columns) is put once. Then, in one run:
(a) one plain boto3 `download_file` with its default TransferConfig (8 MB parts, 10
threads); (a2) boto3 like for like: `download_file` with the platform's part size and
threads (the anchor the target is measured against); (b) the platform's `download_object`
with its defaults, on the platform's client (`connectors/s3.s3_client`); (a), (a2) and (b)
alternate `--repeat` rounds and their medians are compared, with the load average. (c) the
platform's whole materialisation, object → DuckDB table (S3FileSource, the sensor's cut untimed);
(d) the anchor at its best: (a2)'s download + DuckDB read_csv of the local file into a table;
(c) and (d) alternate `--repeat` rounds too, medians compared. `--sweep` first times
`download_object` and a tuned TransferConfig over part sizes × threads. Every download is
checked against the object's MD5. Figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import duckdb
from boto3.s3.transfer import TransferConfig

from bench.files import timed
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.slot_guard import freeze_start_up_heap
from ingestion_platform.sources.files.component import S3FileSource
from ingestion_platform.sources.files.connectors.s3 import s3_client
from ingestion_platform.sources.files.connectors.s3_download import (
    CONCURRENCY,
    PART_SIZE,
    MiB,
    download_object,
)
from ingestion_platform_tests.files_helpers import keys, tick
from ingestion_platform_tests.kinesis_emulators import start_moto
from ingestion_platform_tests.sources import build_source

BUCKET = "bench"
KEY = "drop/orders.csv"


def make_csv(path: Path, rows: int) -> None:
    query = (
        "copy (select i as id, 'customer_' || (i % 5000) as customer, "  # noqa: S608
        f"i * 7 % 100000 as amount, md5(i::varchar) as note from range(1, {rows + 1}) t(i)) "
        f"to '{path}' (header)"
    )
    duckdb.sql(query)


def md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - a checksum, not security
    with path.open("rb") as handle:
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def checked(target: Path, expected: str, action: Callable[[], object]) -> float:
    """Seconds `action` took to write `target`, whose MD5 must be `expected`."""
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    assert md5(target) == expected, f"{target} differs from the object"
    target.unlink()
    return seconds


def sweep(client: Any, target: Path, size: int, etag: str, expected: str) -> None:
    print(f"{'part MB':>8} {'threads':>8} {'download_object MB/s':>21} {'TransferConfig MB/s':>20}")
    for part_mb in (8, 16, 32, 64):
        for threads in (4, 8, 10):
            ours = checked(target, expected, lambda p=part_mb, t=threads: download_object(
                client, BUCKET, KEY, str(target), size, etag, None,
                part_size=p * MiB, concurrency=t))  # fmt: skip
            config = TransferConfig(multipart_chunksize=part_mb * MiB, max_concurrency=threads)
            theirs = checked(target, expected, lambda c=config: client.download_file(
                BUCKET, KEY, str(target), Config=c))  # fmt: skip
            rates = f"{size / 1e6 / ours:>21.0f} {size / 1e6 / theirs:>20.0f}"
            print(f"{part_mb:>8} {threads:>8} {rates}")


def materialisation(endpoint: str, work: Path, rows: int) -> Callable[[], float]:
    """(c), ready to time: the S3FileSource's sensor has cut the object's partition. Each
    call lands it into a fresh warehouse file and returns the materialisation's seconds."""
    attributes = {"bucket": BUCKET, "prefix": "drop/", "endpoint_url": endpoint,
                  "region": "us-east-1", "table": "orders", "patterns": ["*.csv"],
                  "batch": {"files": 1}, "settle": "0s"}  # fmt: skip
    defs = build_source(S3FileSource, work / "defs" / "partner", attributes)
    instance = dg.DagsterInstance.ephemeral()
    (partition,) = keys(tick(defs, instance))
    path = work / "c.duckdb"

    def run() -> float:
        for old in work.glob("c.duckdb*"):
            old.unlink()
        resources = {"warehouse": WarehouseResource(path=str(path))}
        freeze_start_up_heap()  # as every run's process does (slot_guard.py)
        started = time.monotonic()
        assert dg.materialize(list(defs.assets or []), partition_key=partition,
                              resources=resources, instance=instance).success  # fmt: skip
        seconds = time.monotonic() - started
        assert Warehouse(path).count("partner", "orders") == rows
        return seconds

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description="S3 download: boto3 vs the platform, on moto")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    source = work / "orders.csv"
    make_csv(source, args.rows)
    size = source.stat().st_size
    expected = md5(source)
    print(f"{source.name}: {size / 1e6:.0f} MB, {args.rows:,} rows")
    process, endpoint = start_moto()
    try:
        plain = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        plain.create_bucket(Bucket=BUCKET)
        plain.upload_file(str(source), BUCKET, KEY)
        etag = plain.head_object(Bucket=BUCKET, Key=KEY)["ETag"].strip('"')
        target = work / "local.csv"
        if args.sweep:
            sweep(plain, target, size, etag, expected)
        platform = s3_client("us-east-1", endpoint)
        same = TransferConfig(
            multipart_threshold=PART_SIZE,
            multipart_chunksize=PART_SIZE,
            max_concurrency=CONCURRENCY,
        )
        a_runs, a2_runs, b_runs = [], [], []
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        for round_number in range(1, args.repeat + 1):
            a = checked(target, expected, lambda: plain.download_file(BUCKET, KEY, str(target)))
            a2 = checked(target, expected, lambda: plain.download_file(
                BUCKET, KEY, str(target), Config=same))  # fmt: skip
            b = checked(target, expected, lambda: download_object(
                platform, BUCKET, KEY, str(target), size, etag, None))  # fmt: skip
            a_runs.append(a)
            a2_runs.append(a2)
            b_runs.append(b)
            print(
                f"round {round_number}: (a) {size / 1e6 / a:.0f} MB/s, "
                f"(a2) {size / 1e6 / a2:.0f} MB/s, (b) {size / 1e6 / b:.0f} MB/s, "
                f"(b)/(a2) speed {a2 / b:.2f}x"
            )
        a, a2, b = (statistics.median(runs) for runs in (a_runs, a2_runs, b_runs))
        print(f"{'(a) boto3 download_file, defaults (median)':<55} {a:7.2f} s  "
              f"{size / 1e6 / a:7.0f} MB/s")  # fmt: skip
        print(f"{'(a2) boto3 download_file, same parts and threads':<55} {a2:7.2f} s  "
              f"{size / 1e6 / a2:7.0f} MB/s")  # fmt: skip
        print(f"{'(b) platform download_object, defaults (median)':<55} {b:7.2f} s  "
              f"{size / 1e6 / b:7.0f} MB/s")  # fmt: skip
        land = materialisation(endpoint, work, args.rows)
        split: list[float] = []

        def boto3_then_duckdb() -> float:
            database = work / "d.duckdb"
            database.unlink(missing_ok=True)
            started = time.monotonic()
            plain.download_file(BUCKET, KEY, str(target), Config=same)
            split.append(time.monotonic() - started)
            with duckdb.connect(str(database)) as connection:
                connection.execute(f"create table t as select * from read_csv('{target}')")  # noqa: S608
            seconds = time.monotonic() - started
            target.unlink()
            return seconds

        c_runs, d_runs = [], []
        for round_number in range(1, args.repeat + 1):
            c_label = f"(c) platform materialisation, object → DuckDB, round {round_number}"
            c_runs.append(timed(c_label, size, land))
            d_label = f"(d) boto3 (same parts, threads) + DuckDB read_csv, round {round_number}"
            d_runs.append(timed(d_label, size, boto3_then_duckdb))
        c, d = statistics.median(c_runs), statistics.median(d_runs)
        # (c)'s own split is in its run log: "staged 1 file(s) ... in N s", then the landing.
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(f"(c) median {c:.2f} s (rounds {', '.join(f'{x:.2f}' for x in c_runs)})")
        print(f"(d) median {d:.2f} s (rounds {', '.join(f'{x:.2f}' for x in d_runs)}); "
              f"download {statistics.median(split):.2f} s of it (median)")  # fmt: skip
        print(
            f"(b)/(a2) speed: {a2 / b:.2f}x (target >= 1.0; against defaults {a / b:.2f}x); "
            f"(c)/(d) time: {c / d:.2f}x (rounds "
            f"{', '.join(f'{x / y:.2f}' for x, y in zip(c_runs, d_runs, strict=True))})"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
