"""Benchmark: do micro-batches keep up, on an idle machine and on a busy one? (#18)

The demo's code location runs under `dagster dev` (webserver + daemon, the project's
dagster.yaml) in a temporary folder, its sensors on, while producers write at a chosen rate
into three of its sources for `--minutes`:

  shop_events  rows appended to the SQLite shop (`rows: 1000`, `max_wait: 5m`)
  clicks       records put into a Kinesis stream on moto's server (`records: 500`, `max_wait: 1m`)
  partner_files  CSV files uploaded to the SFTP drop folder (`files: 1`, `settle: 10s`)

Each producer stops at a whole batch, so nothing waits for `max_wait` at the end. Every 5 s
the runs waiting to start are counted per sensor. Half-way, a person materialises one
`shop/orders` day from the "UI" (GraphQL, as the Materialize button does) and the time to
success is taken. Once everything produced has landed (or 10 minutes after the producers
stop), Dagster is stopped and the warehouse read: per source, records produced and landed
(exactly once each), put → landed latency (`_loaded_at` minus the put time) p50 and p95,
the longest queue, the runs started and their median duration (start-up and step).

    .venv/bin/python bench/microbatch.py --minutes 10            # idle machine
    .venv/bin/python bench/microbatch.py --minutes 10 --busy 2   # two CPU-bound processes too

It binds 127.0.0.1:2322 (the demo's SFTP port), so `make demo` must not be running.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import kinesis_producer, sftp_partner, shop
from ingestion_platform_tests.e2e.dagster_dev import DagsterDev, free_port

SOURCES = {
    # sensor name, table, id column, batch size (records), max_wait (s)
    "shop_events": ("shop_events__size_sensor", "shop_events.order_events", "id", 1000, 300),
    "clicks": ("clicks__size_sensor", "clicks.events", "event_id", 500, 60),
    "partner_files": ("partner_files__orders__sensor", "partner_files.orders", "order_id", 0, 10),
}
WAITING = ["QUEUED", "NOT_STARTED", "STARTING"]
RUNS = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {
  results { runId status creationTime startTime endTime tags { key value } } } } }"""
LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


class Producers:
    """Writes into the three sources and remembers when each record was put."""

    def __init__(self, folder: Path, kinesis: Any, args: argparse.Namespace) -> None:
        self.put_at: dict[str, dict[int, float]] = defaultdict(dict)
        self.folder, self.kinesis, self.args = folder, kinesis, args
        self.stop = threading.Event()
        self.engine = sa.create_engine(f"sqlite:///{folder / 'data/demo/shop.sqlite'}")

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=t, daemon=True) for t in (self._sql, self._kinesis, self._sftp)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _sql(self) -> None:
        rng, next_id, batch = random.Random(1), shop.ShopSeed().events + 1, 1000
        while not (self.stop.is_set() and (next_id - 1) % batch == 0):
            count = min(self.args.sql_rows, batch - (next_id - 1) % batch)
            with self.engine.begin() as connection:
                shop.append_events(
                    connection, count, first_id=next_id, rng=rng, seed=shop.ShopSeed()
                )
            now = time.time()
            self.put_at["shop_events"].update({i: now for i in range(next_id, next_id + count)})
            next_id += count
            time.sleep(self.args.sql_every)

    def _kinesis(self) -> None:
        rng, next_id, batch = random.Random(2), 1, 500
        while not (self.stop.is_set() and (next_id - 1) % batch == 0):
            count = min(self.args.kinesis_rate, batch - (next_id - 1) % batch)
            kinesis_producer.put(
                self.kinesis, "clicks", kinesis_producer.records(rng, next_id, count, 0)
            )
            now = time.time()
            self.put_at["clicks"].update({i: now for i in range(next_id, next_id + count)})
            next_id += count
            time.sleep(1)

    def _sftp(self) -> None:
        serial = 0
        drop = self.folder / sftp_partner.DROP
        while not self.stop.is_set():
            rows = [f"{serial * 1000 + i},cust_{i % 50},{i + 0.5},Lyon" for i in range(100)]
            name = f"orders_{serial:05}.csv"
            (drop / f"{name}.part").write_text(
                "order_id,customer,amount,city\n" + "\n".join(rows) + "\n"
            )
            os.rename(drop / f"{name}.part", drop / name)
            now = time.time()
            self.put_at["partner_files"].update({serial * 1000 + i: now for i in range(100)})
            serial += 1
            self.stop.wait(self.args.sftp_every)


def _runs(dev: DagsterDev, **run_filter: Any) -> list[dict[str, Any]]:
    return dev.graphql(RUNS, {"filter": run_filter})["data"]["runsOrError"]["results"]


def _sensor_of(run: dict[str, Any]) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == "dagster/sensor_name"), None)


def _click(dev: DagsterDev, day: str) -> float:
    """A person's materialisation of one `shop/orders` day: seconds from launch to success."""
    params = {
        "selector": {"repositoryLocationName": "demo", "repositoryName": "__repository__",
                     "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["shop", "orders"]}]},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }  # fmt: skip
    started = time.monotonic()
    run_id = dev.graphql(LAUNCH, {"params": params})["data"]["launchRun"]["run"]["runId"]
    while True:
        (run,) = _runs(dev, runIds=[run_id])
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            assert run["status"] == "SUCCESS", run
            return time.monotonic() - started
        time.sleep(0.5)


def _landed(warehouse: Warehouse, table: str, column: str) -> dict[int, list[datetime]]:
    rows = warehouse.query(f"select {column}, _loaded_at from {table}")  # noqa: S608
    landed: dict[int, list[datetime]] = defaultdict(list)
    for key, loaded_at in rows:
        landed[int(key)].append(loaded_at)
    return landed


def _all_landed(dev: DagsterDev, producers: Producers) -> bool:
    warehouse = Warehouse(dev.warehouse_path)
    try:
        for source, (_, table, column, _, _) in SOURCES.items():
            schema, name = table.split(".")
            if not warehouse.table_exists(schema, name):
                return False
            wanted = set(producers.put_at[source])
            have = {row[0] for row in warehouse.query(f"select {column} from {table}")}  # noqa: S608
            if not wanted <= have:
                return False
        return True
    except Exception:  # noqa: BLE001 - a run holds the file; look again later
        return False


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run too")
    parser.add_argument("--sql-rows", type=int, default=50, help="rows per insert")
    parser.add_argument("--sql-every", type=float, default=2.0, help="seconds between inserts")
    parser.add_argument("--kinesis-rate", type=int, default=20, help="records per second")
    parser.add_argument("--sftp-every", type=float, default=30.0, help="seconds between files")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-microbatch-"))
    os.chdir(folder)  # the demo's declarations and stand-ins use cwd-relative paths
    (folder / "data/demo").mkdir(parents=True)
    shop.create_shop(sa.create_engine(f"sqlite:///{folder / 'data/demo/shop.sqlite'}"))
    moto_port = free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
    quiet = subprocess.DEVNULL
    helpers = [
        subprocess.Popen(moto, stdout=quiet, stderr=quiet),
        sftp_partner.start_server(2322),
    ]
    time.sleep(2)
    aws = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(aws)
    kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
    kinesis.create_stream(StreamName="clicks", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="clicks")
    env = {
        **aws,
        "CLICKS_KINESIS_ENDPOINT": endpoint,
        "DEMO_S3_ENDPOINT": endpoint,
        "DEMO_GLUE_ENDPOINT": endpoint,
        "PARTNER_SFTP_USER": getpass.getuser(),
        "PARTNER_SFTP_KEY": "data/demo/sftp/partner_user_key",
        "MUSIC_API_URL": "http://127.0.0.1:9",
        "MUSIC_API_CLIENT_ID": "bench",
        "MUSIC_API_CLIENT_SECRET": "bench",
    }
    dev = DagsterDev(folder, env=env).start()
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
    ]
    producers = Producers(folder, kinesis, args)
    queues: dict[str, int] = defaultdict(int)
    loads: list[float] = []
    click_seconds = None
    started = time.monotonic()
    threads = producers.run()
    try:
        while time.monotonic() - started < args.minutes * 60:
            waiting = _runs(dev, statuses=WAITING)
            for sensor in {s for s, *_ in SOURCES.values()}:
                queues[sensor] = max(queues[sensor], sum(_sensor_of(r) == sensor for r in waiting))
            loads.append(os.getloadavg()[0])
            if click_seconds is None and time.monotonic() - started > args.minutes * 30:
                click_seconds = _click(dev, "2026-11-02")
            time.sleep(5)
        producers.stop.set()
        for thread in threads:
            thread.join()
        produced_at = time.monotonic()
        while not _all_landed(dev, producers) and time.monotonic() - produced_at < 600:
            waiting = _runs(dev, statuses=WAITING)
            for sensor in {s for s, *_ in SOURCES.values()}:
                queues[sensor] = max(queues[sensor], sum(_sensor_of(r) == sensor for r in waiting))
            time.sleep(10)
        runs = _runs(dev)
    finally:
        for burner in burners:
            burner.kill()
        dev.stop()
        for helper in helpers:
            helper.terminate()
    warehouse = Warehouse(dev.warehouse_path)
    report: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="minutes"),
        "minutes": args.minutes,
        "busy_processes": args.busy,
        "load_avg_median": round(statistics.median(loads), 2) if loads else None,
        "load_avg_max": round(max(loads), 2) if loads else None,
        "click_to_success_s": round(click_seconds, 1) if click_seconds else None,
        "sources": {},
    }
    print(f"{'source':14} {'produced':>9} {'landed':>9} {'dupes':>6} {'p50 s':>7} {'p95 s':>7} "
          f"{'max queue':>9} {'runs':>5} {'run s':>6} {'asked→end s':>11}")  # fmt: skip
    for source, (sensor, table, column, _, max_wait) in SOURCES.items():
        landed = _landed(warehouse, table, column)
        put = producers.put_at[source]
        latencies = [
            landed[key][0].timestamp() - when for key, when in put.items() if key in landed
        ]
        sensor_runs = [r for r in runs if _sensor_of(r) == sensor and r["endTime"]]
        durations = [r["endTime"] - r["startTime"] for r in sensor_runs if r["startTime"]]
        # From the sensor's request to the landing: the queue, the start-up and the step.
        requested = [r["endTime"] - r["creationTime"] for r in sensor_runs]
        figures = {
            "produced": len(put),
            "landed": sum(1 for key in put if key in landed),
            "duplicates": sum(len(times) - 1 for times in landed.values()),
            "latency_p50_s": round(_percentile(latencies, 0.5), 1),
            "latency_p95_s": round(_percentile(latencies, 0.95), 1),
            "max_queue": queues[sensor],
            "runs": len(sensor_runs),
            "run_median_s": round(statistics.median(durations), 1) if durations else None,
            "request_to_end_median_s": round(statistics.median(requested), 1)
            if requested
            else None,
            "max_wait_s": max_wait,
        }
        report["sources"][source] = figures
        print(f"{source:14} {figures['produced']:>9} {figures['landed']:>9} "
              f"{figures['duplicates']:>6} {figures['latency_p50_s']:>7} "
              f"{figures['latency_p95_s']:>7} {figures['max_queue']:>9} {figures['runs']:>5} "
              f"{figures['run_median_s']!s:>6} "
              f"{figures['request_to_end_median_s']!s:>11}")  # fmt: skip
    print(f"click → success: {report['click_to_success_s']} s; load average median "
          f"{report['load_avg_median']}, max {report['load_avg_max']}")  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
