"""Benchmark: the KinesisStreamSource against a plain boto3 loop, on one moto server.

What is measured
----------------
(a) plain     one boto3 client reads every shard of a 4-shard stream from TRIM_HORIZON to
              its end (GetRecords, Limit 10,000, shard after shard) and `json.loads` every
              record; it lands nothing.
(a2) threads  the same loop with the shards read in parallel, one thread per shard (at most
              8, the platform's `read_threads`): the plain loop at its best against moto.
(b) platform  the same records as one size partition (`batch: {records: N}`, cut by the
              sensor first, untimed), materialised with `dg.materialize`: shards read in
              parallel, decoded, typed by DuckDB and landed in one transaction.
              Records/s of (b) over the faster of (a) and (a2), per round, is the target
              (>= 0.9); (b) over (a) is printed too.
(c) sensor    tick time over a 16-shard stream: an idle tick (nothing pending) and a tick
              that cuts 16 full batches of 500 records (one partition: batches
              waiting at once are coalesced).
(d) latency   put -> landed at `batch: {records: 500, max_wait: 10s}`: a producer puts R
              records/s for S seconds while a loop ticks the sensor every second and lands
              each partition as soon as it is cut; per row, `_loaded_at` (the landing
              transaction's time) minus `_approximate_arrival`.

moto's server runs in its own process on a free loopback port. Rounds alternate (a), (a2), (b);
each run is verified (record counts, distinct (shard, sequence) pairs).

    .venv/bin/python -m bench.kinesis --records 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform.demo import kinesis_producer
from ingestion_platform.slot_guard import freeze_start_up_heap
from ingestion_platform_tests.kinesis_emulators import client, create_stream, declare, start_moto
from ingestion_platform_tests.kinesis_emulators import tick as sensor_tick


def fill(kinesis: object, stream: str, records: int) -> None:
    rng = random.Random(7)
    for first in range(1, records + 1, 5000):
        count = min(5000, records - first + 1)
        entries = kinesis_producer.records(rng, first, count, 0.0)
        kinesis_producer.put(kinesis, stream, entries)


def read_shard(kinesis: object, stream: str, shard_id: str) -> int:
    """One shard from TRIM_HORIZON to its end, every record decoded."""
    count = 0
    iterator = kinesis.get_shard_iterator(  # type: ignore[attr-defined]
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)  # type: ignore[attr-defined]
        for record in response["Records"]:
            json.loads(record["Data"])
            count += 1
        iterator = response.get("NextShardIterator")
        if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            break
    return count


def plain_loop(kinesis: object, stream: str, threads: int = 1) -> int:
    """(a) shard after shard, or (a2) the shards in `threads` parallel threads."""
    shards = kinesis.list_shards(StreamName=stream)["Shards"]  # type: ignore[attr-defined]
    ids = [shard["ShardId"] for shard in shards]
    if threads == 1:
        return sum(read_shard(kinesis, stream, shard_id) for shard_id in ids)
    with ThreadPoolExecutor(max_workers=min(threads, len(ids))) as pool:
        return sum(pool.map(lambda shard_id: read_shard(kinesis, stream, shard_id), ids))


def platform_run(endpoint: str, stream: str, records: int, work: Path) -> tuple[float, float]:
    """(b): cut one partition of every record (untimed), then time its materialisation."""
    folder = Path(tempfile.mkdtemp(dir=work))
    path = folder / "warehouse.duckdb"
    defs = declare(folder, endpoint, stream, batch={"records": records})
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        (request,) = sensor_tick(defs, instance, path).run_requests
        tick_seconds = time.monotonic() - started
        resources = {"warehouse": WarehouseResource(path=str(path))}
        freeze_start_up_heap()  # as every run's process does (slot_guard.py)
        started = time.monotonic()
        result = dg.materialize(
            defs.assets, partition_key=request.partition_key, instance=instance, resources=resources
        )
        seconds = time.monotonic() - started
    assert result.success
    landed = Warehouse(path).query(
        "select count(*), count(distinct (_shard_id, _sequence_number)) from clicks.events"
    )[0]
    assert landed == (records, records), landed
    return seconds, tick_seconds


def sensor_ticks(endpoint: str, work: Path) -> dict[str, float]:
    """(c): one tick with nothing pending, one that cuts 16 full batches, on 16 shards.

    The 16 batches waiting at once are cut as one partition (several full batches → one
    partition, docs/batch.md "When the runs fall behind"), so one run request holds them.
    """
    kinesis = client(endpoint)
    stream = "bench-16"
    create_stream(kinesis, stream, 16)
    folder = Path(tempfile.mkdtemp(dir=work))
    path = folder / "warehouse.duckdb"
    defs = declare(folder, endpoint, stream, batch={"records": 500})
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        assert not sensor_tick(defs, instance, path).run_requests
        idle = time.monotonic() - started
        fill(kinesis, stream, 16 * 500)
        started = time.monotonic()
        cut = sensor_tick(defs, instance, path).run_requests
        cutting = time.monotonic() - started
        assert len(cut) == 1, len(cut)
        started = time.monotonic()
        assert not sensor_tick(defs, instance, path).run_requests
        after = time.monotonic() - started
    return {"idle_tick_s": idle, "tick_cutting_16_batches_s": cutting, "idle_after_cut_s": after}


def latency(endpoint: str, work: Path, rate: int, seconds: int) -> dict[str, float]:
    """(d): put at `rate`/s for `seconds`, tick every second, land each cut at once."""
    kinesis = client(endpoint)
    stream = "bench-latency"
    create_stream(kinesis, stream, 4)
    folder = Path(tempfile.mkdtemp(dir=work))
    path = folder / "warehouse.duckdb"
    defs = declare(folder, endpoint, stream, batch={"records": 500, "max_wait": "10s"})
    total = rate * seconds
    stop = threading.Event()

    def produce() -> None:
        rng = random.Random(1)
        started = time.monotonic()
        for second in range(seconds):
            entries = kinesis_producer.records(rng, second * rate + 1, rate, 0.0)
            kinesis_producer.put(kinesis, stream, entries)
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
        stop.set()

    producer = threading.Thread(target=produce)
    resources = {"warehouse": WarehouseResource(path=str(path))}
    with dg.instance_for_test() as instance:
        producer.start()
        deadline = time.monotonic() + seconds + 60
        while time.monotonic() < deadline:
            tick_started = time.monotonic()
            for request in sensor_tick(defs, instance, path).run_requests:
                dg.materialize(
                    defs.assets,
                    partition_key=request.partition_key,
                    instance=instance,
                    resources=resources,
                )
            if stop.is_set() and Warehouse(path).count("clicks", "events") >= total:
                break
            time.sleep(max(0.0, tick_started + 1 - time.monotonic()))
        producer.join()
    rows = Warehouse(path).query(
        "select epoch_ms(_loaded_at) - epoch_ms(_approximate_arrival) from clicks.events"
    )
    lags = sorted(row[0] / 1000 for row in rows)
    assert len(lags) == total, (len(lags), total)
    return {
        "p50_s": lags[len(lags) // 2],
        "p95_s": lags[int(len(lags) * 0.95)],
        "max_s": lags[-1],
        "records": float(total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Kinesis source vs a plain boto3 loop")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=100)
    parser.add_argument("--latency-seconds", type=int, default=60)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    work = Path("bench/.work/kinesis").absolute()
    work.mkdir(parents=True, exist_ok=True)
    process, endpoint = start_moto()
    try:
        kinesis = client(endpoint)
        create_stream(kinesis, "bench", 4)
        started = time.monotonic()
        fill(kinesis, "bench", args.records)
        print(f"put {args.records:,} records in {time.monotonic() - started:.1f}s")
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        platform_run(endpoint, "bench", args.records, work)  # warm-up, untimed
        plain_rates, threaded_rates, platform_rates = [], [], []

        def rate(threads: int) -> float:
            started = time.monotonic()
            assert plain_loop(kinesis, "bench", threads) == args.records
            return args.records / (time.monotonic() - started)

        for round_number in range(1, args.rounds + 1):
            plain, threaded = rate(1), rate(8)
            seconds, tick_seconds = platform_run(endpoint, "bench", args.records, work)
            platform = args.records / seconds
            plain_rates.append(plain)
            threaded_rates.append(threaded)
            platform_rates.append(platform)
            print(
                f"round {round_number}: plain {plain:,.0f} rec/s, threads {threaded:,.0f} "
                f"rec/s, platform {platform:,.0f} rec/s ({platform / max(plain, threaded):.2f}x "
                f"the best, {platform / plain:.2f}x plain); cutting tick {tick_seconds:.2f}s"
            )
        best = [max(pair) for pair in zip(plain_rates, threaded_rates, strict=True)]
        ratio = statistics.median(platform_rates) / statistics.median(best)
        print(
            f"median: plain {statistics.median(plain_rates):,.0f} rec/s, threads "
            f"{statistics.median(threaded_rates):,.0f} rec/s, best of the two "
            f"{statistics.median(best):,.0f}, platform {statistics.median(platform_rates):,.0f}"
            f" rec/s, ratio {ratio:.2f} against the best "
            f"({'target met' if ratio >= 0.9 else 'target missed'}), "
            f"{statistics.median(platform_rates) / statistics.median(plain_rates):.2f} "
            "against (a)"
        )
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(
            "sensor, 16 shards:", {k: round(v, 3) for k, v in sensor_ticks(endpoint, work).items()}
        )
        if args.latency_seconds > 0:  # 0 skips the put -> landed run
            figures = latency(endpoint, work, args.latency_rate, args.latency_seconds)
            print("put -> landed:", {k: round(v, 2) for k, v in figures.items()})
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
