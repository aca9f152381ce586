"""The daemon under load, as an operator sees it: `dagster dev` with the project's
`dagster.yaml`, the demo's code location and a test-only one (`minute_source.py`).

- Eight runs launched at once over two sources (shop days and music days) while three sensors
  (the shop's order events, a size batch; files dropped into the inbox; objects written to
  S3 on moto's server) start runs of their own: every run succeeds, no run logs a DuckDB
  lock error, and every partition holds exactly its source's rows.
- A Glue backfill over three days: one job run (the demo's `backfill: single_run`), each
  day's output landed exactly, the demo's stand-in worker writing what the job would.
- A schedule tick: a source batched every minute lands the newest closed minute exactly,
  started by the daemon alone.
- A `duckdb_warehouse` slot held by a run that died outside the daemon blocks the queue, as
  `dagster instance concurrency get` shows, until it is freed (docs/troubleshooting.md).
- A run whose code server does not answer while it is dequeued (the server frozen with
  SIGSTOP past the gRPC timeout) goes back to the queue and lands once the server answers.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from ingestion_platform.core.warehouse import WAREHOUSE_POOL
from ingestion_platform.demo import glue_worker, s3_drops, shop
from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform.demo.sftp_partner import partner_file
from ingestion_platform_tests.e2e import minute_source
from ingestion_platform_tests.e2e.dagster_dev import DAGSTER, DEMO_WORKSPACE, DagsterDev, free_port
from ingestion_platform_tests.e2e.test_ui_end_to_end import (
    SEED,
    _assert_contiguous,
    _cut_partitions,
    _finished,
    _runs,
    _shop_engine,
    _source_order_ids,
    _wait_for,
    _warehouse,
    run_backfill,
)
from ingestion_platform_tests.moto_server import start_moto
from ingestion_platform_tests.music import CATALOG, SECRET
from ingestion_platform_tests.servers import stop_process

pytestmark = pytest.mark.e2e

SHOP_DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
MUSIC_DAYS = ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
INBOX_FILES = 10  # two partitions of the inbox's `files: 5`, nothing left pending
S3_OBJECTS = 3  # the demo's partner_s3: a partition per object
# Events appended while the runs queue: with the seed's 2,500, exactly five 1,000-row cuts.
MORE_EVENTS = 2500
# What DuckDB says when a second process opens a file another one writes.
LOCK_ERRORS = re.compile(r"could not set lock|conflicting lock|lock on file", re.IGNORECASE)
MINUTE_KEY = "%Y-%m-%dT%H:%M"


@pytest.fixture(scope="module")
def music_api() -> Iterator[MusicApiServer]:
    with MusicApiServer(catalog=CATALOG, client_secret=SECRET).start() as running:
        yield running


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Any]:
    """moto's server standing in for S3 (the demo's bucket) and Glue (the demo's job, whose
    output the demo's stand-in worker writes, since moto runs no job scripts)."""
    process, endpoint = start_moto()
    client = glue_worker.aws_client("s3", endpoint)
    client.create_bucket(Bucket=s3_drops.BUCKET)
    worker = subprocess.Popen(
        [sys.executable, "-m", glue_worker.__name__, "--endpoint", endpoint,
         "--state-seconds", "1"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    glue = glue_worker.aws_client("glue", endpoint)
    _wait_for_local("the demo's Glue job", lambda: glue.list_jobs()["JobNames"], timeout=60)
    yield client
    for child in (worker, process):
        stop_process(child)


def _wait_for_local(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready within {timeout}s")


@pytest.fixture(scope="module")
def dagster_dev(
    tmp_path_factory: pytest.TempPathFactory, music_api: MusicApiServer, moto_s3: Any
) -> Iterator[DagsterDev]:
    folder = tmp_path_factory.mktemp("daemon")
    (folder / "data" / "demo").mkdir(parents=True)
    (folder / "data" / "inbox").mkdir()
    shop.create_shop(_shop_engine(folder), SEED)
    _create_minute_table(folder)
    env = {
        "MUSIC_API_URL": music_api.url,
        "MUSIC_API_CLIENT_ID": "demo-client",
        "MUSIC_API_CLIENT_SECRET": SECRET,
        minute_source.FOLDER_ENV: str(folder / "minute_defs"),
        minute_source.START_ENV: _minute_start(folder).strftime(MINUTE_KEY),
        minute_source.DATABASE_ENV: f"sqlite:///{_minute_database(folder)}",
        "DEMO_S3_ENDPOINT": moto_s3.meta.endpoint_url,
        "DEMO_GLUE_ENDPOINT": moto_s3.meta.endpoint_url,
        # How long a call into a code server may take (default 60 s): the frozen-server test
        # waits for it to run out. The demo's calls take a few seconds even on a busy machine.
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "30",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    running = DagsterDev(folder, env=env, workspace=folder / "workspace.yaml")
    # The minute location runs in a gRPC server of the test's own, which a test can freeze;
    # it launches that location's runs, so it gets the deployment's environment and folder.
    port = free_port()
    running.home.mkdir(parents=True)
    minute_server = subprocess.Popen(
        [str(DAGSTER), "api", "grpc", "-m", minute_source.__name__, "-h", "127.0.0.1",
         "-p", str(port)],
        cwd=folder,
        env=running.environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workspace = yaml.safe_load(DEMO_WORKSPACE.read_text())
    workspace["load_from"].append(
        {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": "e2e_minute"}}
    )
    (folder / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    _wait_for_port(port, minute_server)
    running.minute_server = minute_server  # type: ignore[attr-defined]
    running.start()
    yield running
    running.stop()
    os.kill(minute_server.pid, signal.SIGCONT)
    stop_process(minute_server)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the minute location's gRPC server exited: {process}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the minute location's gRPC server did not listen on {port}")


# --- eight runs and two sensors at once --------------------------------------------------

LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
GROUP_ASSETS = """query Group($group: AssetGroupSelector!) {
  assetNodes(group: $group) { assetKey { path } } }"""
LOGS = """query Logs($runId: ID!, $after: String) { logsForRun(runId: $runId, afterCursor: $after) {
  __typename ... on EventConnection { cursor hasMore events { __typename
    ... on MessageEvent { message level } ... on ExecutionStepFailureEvent { error { message } }
  } } } }"""


def _launch(dev: DagsterDev, source: str, partition: str, location: str = "demo") -> str:
    """One partition of a source's assets, launched as the UI's Materialize button does."""
    group = {
        "groupName": source,
        "repositoryName": "__repository__",
        "repositoryLocationName": location,
    }
    nodes = dev.graphql(GROUP_ASSETS, {"group": group})["data"]["assetNodes"]
    assert nodes, f"no assets in group {source!r} of {location!r}"
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",  # the job the UI's Materialize button runs
            "assetSelection": [{"path": node["assetKey"]["path"]} for node in nodes],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }
    launched = dev.graphql(LAUNCH, {"params": params})["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _run_log(dev: DagsterDev, run_id: str) -> list[str]:
    """Every message of the run's event log, step failures' errors included."""
    messages: list[str] = []
    after = None
    while True:
        page = dev.graphql(LOGS, {"runId": run_id, "after": after})["data"]["logsForRun"]
        for event in page["events"]:
            messages.append(event.get("message") or "")
            messages.append((event.get("error") or {}).get("message") or "")
        if not page["hasMore"]:
            return messages
        after = page["cursor"]


def _drop_inbox_files(folder: Path) -> dict[str, list[int]]:
    """Write CSV files into the inbox as a person would (renamed in once complete)."""
    dropped = {}
    for n in range(INBOX_FILES):
        name = f"drop_{n:02d}.csv"
        ids = list(range(n * 100, n * 100 + 3 + n))
        partial = folder / "data" / "inbox" / f"{name}.part"
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            writer.writerows([i, f"item {i}"] for i in ids)
        partial.rename(partial.with_name(name))
        dropped[name] = ids
    return dropped


def _albums(day: str) -> list[str]:
    end = (datetime.fromisoformat(day) + timedelta(days=1)).date()
    return sorted(album["id"] for album in CATALOG.releases_between(day, end))


def _tracks(day: str) -> list[str]:
    return sorted(t["id"] for album in _albums(day) for t in CATALOG.tracks_for(album))


def _source_customer_ids(dev: DagsterDev, day: str) -> list[int]:
    start = datetime.fromisoformat(day)
    query = (
        sa.select(shop.customers.c.id)
        .where(shop.customers.c.updated_at >= start)
        .where(shop.customers.c.updated_at < start + timedelta(days=1))
        .order_by(shop.customers.c.id)
    )
    with _shop_engine(dev.folder).connect() as connection:
        return list(connection.execute(query).scalars())


def _ids(dev: DagsterDev, relation: str, key: str) -> list[Any]:
    sql = f"select id from {relation} where _batch_key = ? order by id"  # noqa: S608
    return [row[0] for row in _warehouse(dev, sql, [key])]


def _sensor_runs(dev: DagsterDev, sensor: str) -> list[dict[str, Any]]:
    return _runs(dev, tags=[{"key": "dagster/sensor_name", "value": sensor}])


def _sensors_caught_up(dev: DagsterDev) -> bool:
    cut = _cut_partitions(dev)
    event_runs = _sensor_runs(dev, "shop_events__size_sensor")
    inbox_runs = _sensor_runs(dev, "inbox__drops__sensor")
    s3_runs = _sensor_runs(dev, "partner_s3__orders__sensor")
    # How many partitions each cut depends on when data met the ticks (a sensor coalesces
    # whatever waits while its runs are queued); a run per partition, all finished.
    inbox = _partition_keys(dev, ["inbox", "drops"])
    s3 = _partition_keys(dev, ["partner_s3", "orders"])
    return (
        bool(cut)
        and _assert_contiguous(cut) == SEED.events + MORE_EVENTS
        and len(event_runs) == len(cut)
        and _files_in(inbox) == INBOX_FILES
        and len(inbox_runs) == len(inbox)
        and _files_in(s3) == S3_OBJECTS
        and len(s3_runs) == len(s3)
        and _finished(dev, event_runs + inbox_runs + s3_runs)
    )


def _partition_keys(dev: DagsterDev, path: list[str]) -> list[str]:
    query = "query Keys($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } } }"  # noqa: E501
    return dev.graphql(query, {"path": path})["data"]["assetNodeOrError"]["partitionKeys"]


def _files_in(keys: list[str]) -> int:
    """Files the partitions hold: a key names its first file, `+N` more, and a hash."""
    more = [re.fullmatch(r".*\+(\d+)@\w+", key) for key in keys]
    return sum(1 + (int(match.group(1)) if match else 0) for match in more)


def _write_s3_objects(client: Any) -> dict[str, list[int]]:
    """The partner's objects, as s3_drops.py writes them: the order ids of each."""
    written = {}
    for serial in range(S3_OBJECTS):
        name, body = partner_file(random.Random(serial), serial)
        name = name.replace("orders_", f"orders_{serial}_", 1)
        client.put_object(Bucket=s3_drops.BUCKET, Key=f"incoming/2026/11/28/{name}", Body=body)
        lines = body.decode().splitlines()[1:]
        written[f"2026/11/28/{name}"] = [int(line.split(",")[0]) for line in lines]
    return written


def test_eight_runs_and_sensor_runs_at_once_all_land_exactly_without_lock_errors(
    dagster_dev: DagsterDev, moto_s3: Any
) -> None:
    dev = dagster_dev
    started = time.monotonic()
    partitions = [("shop", day) for day in SHOP_DAYS] + [("music", day) for day in MUSIC_DAYS]
    with ThreadPoolExecutor(max_workers=len(partitions) + 1) as pool:
        dropped_future = pool.submit(_drop_inbox_files, dev.folder)
        objects_future = pool.submit(_write_s3_objects, moto_s3)
        launched = list(pool.map(lambda partition: _launch(dev, *partition), partitions))
        dropped = dropped_future.result()
        objects = objects_future.result()
    with _shop_engine(dev.folder).begin() as connection:
        shop.append_events(
            connection, MORE_EVENTS, first_id=SEED.events + 1, rng=random.Random(3), seed=SEED
        )

    def launched_done() -> bool:
        runs = _runs(dev, runIds=launched)
        return len(runs) == len(partitions) and _finished(dev, runs)

    _wait_for("the eight launched runs", launched_done, timeout=420, dev=dev)
    _wait_for("the sensors' runs", lambda: _sensors_caught_up(dev), timeout=300, dev=dev)
    # The minute schedule keeps starting runs: wait for those begun so far, ignore later ones.
    run_ids = [run["runId"] for run in _runs(dev)]
    every_run = _wait_for(
        "every run so far",
        lambda: (runs := _runs(dev, runIds=run_ids)) and _finished(dev, runs) and runs,
        timeout=240,
        dev=dev,
    )
    elapsed = time.monotonic() - started
    assert len(every_run) >= len(partitions) + 3  # and at least a run per sensor (coalesced)
    for run in every_run:
        locked = [m for m in _run_log(dev, run["runId"]) if LOCK_ERRORS.search(m)]
        assert locked == [], (run, locked)
    # Sensors and schedules evaluate in the code servers, whose output goes to this log.
    assert not LOCK_ERRORS.search(dev.log_path.read_text(errors="replace"))

    for day in SHOP_DAYS:
        assert _ids(dev, "shop.orders", day) == _source_order_ids(dev, day), day
        assert _ids(dev, "shop.customers", day) == _source_customer_ids(dev, day), day
    for day in MUSIC_DAYS:
        assert _ids(dev, "music.new_releases", day) == _albums(day), day
        assert _ids(dev, "music.album_tracks", day) == _tracks(day), day

    cut = _cut_partitions(dev)
    # Whole batches of 1,000 (several at once when they waited together), none skipped.
    assert _assert_contiguous(cut) == 5000
    assert all(int(key.split("..")[1]) % 1000 == 0 for key in cut), cut
    for key in cut:
        lo, hi = key.split("..")
        expected = list(range(int(lo or 0) + 1, int(hi) + 1))
        assert _ids(dev, "shop_events.order_events", key) == expected, key

    landed = _warehouse(dev, "select _file, id, _batch_key from inbox.drops order by _file, id")
    assert [(file, i) for file, i, _ in landed] == [
        (name, i) for name, ids in sorted(dropped.items()) for i in ids
    ]
    files_per_partition: dict[str, set[str]] = {}
    for file, _, key in landed:
        files_per_partition.setdefault(key, set()).add(file)
    # `files: 5`: whole groups of five, one partition holding both if they waited together.
    assert all(len(files) % 5 == 0 for files in files_per_partition.values()), files_per_partition

    landed = _warehouse(dev, "select _file, order_id from partner_s3.orders order by _file, _row")
    assert landed == [(key, i) for key, ids in sorted(objects.items()) for i in ids]
    print(f"{len(every_run)} runs, launched to all landed: {elapsed:.1f} s")


# --- a Glue backfill ------------------------------------------------------------------------

GLUE_DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]


def test_a_glue_backfill_starts_one_job_run_and_lands_each_day_exactly(
    dagster_dev: DagsterDev, moto_s3: Any
) -> None:
    dev = dagster_dev
    backfill_id = run_backfill(dev, ["orders_glue", "orders"], GLUE_DAYS)
    runs = _runs(dev, tags=[{"key": "dagster/backfill", "value": backfill_id}])
    assert len(runs) == 1 and _finished(dev, runs)  # `backfill: single_run` in the demo
    glue = glue_worker.aws_client("glue", moto_s3.meta.endpoint_url)
    job_runs = glue.get_job_runs(JobName="orders_export")["JobRuns"]
    assert [(r["Arguments"]["--start"][:10], r["Arguments"]["--end"][:10]) for r in job_runs] == [
        ("2026-11-02", "2026-11-05")
    ]
    for day in GLUE_DAYS:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        expected = [o["order_id"] for o in glue_worker.orders(start, start + timedelta(days=1))]
        landed = _warehouse(
            dev, "select order_id from orders_glue.orders where _batch_key = ? order by 1", [day]
        )
        assert [row[0] for row in landed] == sorted(expected), day


# --- a schedule tick ----------------------------------------------------------------------


def _minute_database(folder: Path) -> Path:
    return folder / "minute.sqlite"


def _minute_start(folder: Path) -> datetime:
    # Fixed per folder so the fixture and the table agree: ten minutes before the table's rows.
    marker = folder / "minute_start"
    if not marker.exists():
        now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
        marker.write_text((now - timedelta(minutes=10)).isoformat())
    return datetime.fromisoformat(marker.read_text())


ticks = sa.Table(
    "ticks",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


def _create_minute_table(folder: Path) -> None:
    """Rows every 7 s from the first window to 20 minutes ahead, in UTC wall-clock time.

    7 s does not divide a minute, so neighbouring windows hold 8 or 9 rows and a window read
    one row short or long shows.
    """
    engine = sa.create_engine(f"sqlite:///{_minute_database(folder)}")
    ticks.create(engine)
    start = _minute_start(folder)
    with engine.begin() as connection:
        connection.execute(
            ticks.insert(),
            [
                {"id": n, "updated_at": start + timedelta(seconds=7 * n)}
                for n in range(30 * 60 // 7)
            ],
        )
    engine.dispose()


def _source_tick_ids(dev: DagsterDev, start: datetime) -> list[int]:
    engine = sa.create_engine(f"sqlite:///{_minute_database(dev.folder)}")
    query = (
        sa.select(ticks.c.id)
        .where(ticks.c.updated_at >= start)
        .where(ticks.c.updated_at < start + timedelta(minutes=1))
        .order_by(ticks.c.id)
    )
    try:
        with engine.connect() as connection:
            return list(connection.execute(query).scalars())
    finally:
        engine.dispose()


TICKS = """query Ticks($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) { ... on Schedule { scheduleState {
    ticks(limit: 20) { status timestamp runIds } } } } }"""
RUN_DETAIL = """query Run($id: ID!) { runOrError(runId: $id) { ... on Run {
  runId status tags { key value } } } }"""


def _landed_tick(dev: DagsterDev) -> tuple[datetime, dict[str, Any]] | None:
    """The first tick whose run succeeded: its scheduled time and the run."""
    selector = {
        "repositoryLocationName": "e2e_minute",
        "repositoryName": "__repository__",
        "scheduleName": f"{minute_source.SOURCE}__schedule",
    }
    answer = dev.graphql(TICKS, {"selector": selector})["data"]["scheduleOrError"]
    for tick in sorted(answer["scheduleState"]["ticks"], key=lambda t: t["timestamp"]):
        assert tick["status"] != "FAILURE", tick
        for run_id in tick["runIds"]:
            run = dev.graphql(RUN_DETAIL, {"id": run_id})["data"]["runOrError"]
            assert run["status"] not in ("FAILURE", "CANCELED"), (tick, run, dev.log_tail())
            if run["status"] == "SUCCESS":
                return datetime.fromtimestamp(tick["timestamp"], UTC).replace(tzinfo=None), run
    return None


def test_the_daemons_schedule_tick_lands_the_newest_closed_minute_exactly(
    dagster_dev: DagsterDev,
) -> None:
    dev = dagster_dev
    scheduled_at, run = _wait_for(
        "a run started by the schedule's tick", lambda: _landed_tick(dev), timeout=240, dev=dev
    )
    key = {tag["key"]: tag["value"] for tag in run["tags"]}["dagster/partition"]
    # The tick at a minute's end requests the window that just closed, and only that one.
    assert key == (scheduled_at - timedelta(minutes=1)).strftime(MINUTE_KEY), (scheduled_at, run)

    window = datetime.strptime(key, MINUTE_KEY)
    expected = _source_tick_ids(dev, window)
    assert _ids(dev, f"{minute_source.SOURCE}.ticks", key) == expected
    assert len(expected) in (8, 9)


# --- a slot held by a dead run ------------------------------------------------------------

FREE_SLOTS = """mutation Free($runId: String!) { freeConcurrencySlotsForRun(runId: $runId) }"""


def test_a_slot_held_by_a_dead_run_blocks_the_queue_until_it_is_freed(
    dagster_dev: DagsterDev,
) -> None:
    dev = dagster_dev
    # What a run killed with -9 outside the daemon's sight leaves: its claim on the pool.
    dead_run = "killed-outside-the-daemon"
    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        storage = instance.event_log_storage

        def claimed() -> bool:
            status = storage.claim_concurrency_slot(WAREHOUSE_POOL, dead_run, "shop__orders")
            return status.is_claimed

        _wait_for("the dead run's claim", claimed, timeout=120, dev=dev)

    occupied = subprocess.run(
        [str(DAGSTER), "instance", "concurrency", "get", WAREHOUSE_POOL],
        env={**os.environ, "DAGSTER_HOME": str(dev.home)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert occupied.strip() == f'"{WAREHOUSE_POOL}": 1 / 1 slots occupied'

    run_id = _launch(dev, "shop", "2026-11-06")
    time.sleep(20)
    (run,) = _runs(dev, runIds=[run_id])
    assert run["status"] in ("QUEUED", "STARTING", "STARTED"), run

    assert dev.graphql(FREE_SLOTS, {"runId": dead_run})["data"]["freeConcurrencySlotsForRun"]

    def landed() -> bool:
        runs = _runs(dev, runIds=[run_id])
        return _finished(dev, runs)

    _wait_for("the run after the slot was freed", landed, timeout=180, dev=dev)
    assert _ids(dev, "shop.orders", "2026-11-06") == _source_order_ids(dev, "2026-11-06")


# --- a code server that does not answer at dequeue ----------------------------------------

REQUEUED = "Run dequeue failed to reach the user code server, re-submitting the run into the queue"


def test_a_run_whose_code_server_does_not_answer_at_dequeue_is_queued_again(
    dagster_dev: DagsterDev,
) -> None:
    dev = dagster_dev
    server: subprocess.Popen[bytes] = dev.minute_server  # type: ignore[attr-defined]
    held_by = "holds-the-slot-while-the-server-freezes"
    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        storage = instance.event_log_storage

        def claimed() -> bool:
            return storage.claim_concurrency_slot(WAREHOUSE_POOL, held_by, "x").is_claimed

        _wait_for("the slot", claimed, timeout=180, dev=dev)
    window = _minute_start(dev.folder) + timedelta(minutes=2)
    key = window.strftime(MINUTE_KEY)
    run_id = _launch(dev, minute_source.SOURCE, key, location="e2e_minute")
    time.sleep(5)
    (run,) = _runs(dev, runIds=[run_id])
    assert run["status"] == "QUEUED", run  # the held slot keeps it queued

    # Frozen, as a code server busy loading definitions on a loaded machine is: the
    # daemon's request times out (DAGSTER_GRPC_TIMEOUT_SECONDS) while it dequeues the run.
    os.kill(server.pid, signal.SIGSTOP)
    try:
        assert dev.graphql(FREE_SLOTS, {"runId": held_by})["data"]["freeConcurrencySlotsForRun"]

        def requeued() -> bool:
            (run,) = _runs(dev, runIds=[run_id])
            assert run["status"] in ("QUEUED", "STARTING"), run  # never failed
            logged = any(REQUEUED in message for message in _run_log(dev, run_id))
            return logged and run["status"] == "QUEUED"

        _wait_for("the run to go back to the queue", requeued, timeout=240, dev=dev)
    finally:
        os.kill(server.pid, signal.SIGCONT)

    _wait_for("the re-queued run", lambda: _finished(dev, _runs(dev, runIds=[run_id])), 240, dev)
    assert _ids(dev, f"{minute_source.SOURCE}.ticks", key) == _source_tick_ids(dev, window)
