"""End to end, as people use it: `dagster dev` (webserver + daemon) from the project's own
workspace.yaml and dagster.yaml, a real headless Chromium clicking through the UI, the
GraphQL API for a backfill, and the daemon's sensor ticks landing new source rows.

The module runs twice: on the instance storage `make demo` uses (SQLite under
DAGSTER_HOME) and on the production profile's (PostgreSQL, a fresh database per run of the
module), so the clicks, the backfill and the sensor's restart are proven on both.

Screenshots go to `test-artifacts/e2e/` (git-ignored) so a failure can be looked at.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo import shop
from ingestion_platform_tests.conftest import POSTGRES_ADMIN_URL, _fresh_database
from ingestion_platform_tests.e2e.dagster_dev import PROJECT, DagsterDev

pytestmark = pytest.mark.e2e

ARTIFACTS = PROJECT / "test-artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
# Flags for a closed network: no background fetches, no component updates, no sync.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEED = shop.ShopSeed(customers=40, orders=400, events=2500, days=6)


def postgres_storage(url: str) -> dict[str, Any]:
    """The production profile's `storage:` section (docs/operations.md).

    dagster-postgres's SQL is written for psycopg2 (a bare postgresql:// URL would pick
    SQLAlchemy 2.1's default, psycopg 3, and storing an event fails), hence the driver.
    """
    psycopg2_url = sa.make_url(url).set(drivername="postgresql+psycopg2")
    return {"storage": {"postgres": {"postgres_url": psycopg2_url.render_as_string(False)}}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the project's own storage, else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    yield from _fresh_database(POSTGRES_ADMIN_URL, "PostgreSQL", '"', " with (force)")


@pytest.fixture(scope="module")
def dagster_dev(
    tmp_path_factory: pytest.TempPathFactory, storage: str | None
) -> Iterator[DagsterDev]:
    folder = tmp_path_factory.mktemp("e2e")
    # The demo's declarations read the shop at sqlite:///data/demo/shop.sqlite (cwd-relative).
    (folder / "data" / "demo").mkdir(parents=True)
    shop.create_shop(_shop_engine(folder), SEED)
    running = DagsterDev(folder, instance=postgres_storage(storage) if storage else {}).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(dagster_dev: DagsterDev) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium package")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser.new_page(viewport={"width": 1400, "height": 900})
        browser.close()


def _shop_engine(folder: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{folder / 'data' / 'demo' / 'shop.sqlite'}")


def _warehouse(dev: DagsterDev, sql: str, params: list[Any] | None = None) -> list[tuple]:
    # Through the warehouse lock, as every process reads it: sensor runs keep landing while
    # the test reads (and a person's run now goes ahead of them, so they follow it closely).
    return Warehouse(dev.warehouse_path).query(sql, params or [])


def _source_order_ids(dev: DagsterDev, day: str) -> list[int]:
    start = datetime.fromisoformat(day)
    query = (
        sa.select(shop.orders.c.id)
        .where(shop.orders.c.updated_at >= start)
        .where(shop.orders.c.updated_at < start + timedelta(days=1))
        .order_by(shop.orders.c.id)
    )
    with _shop_engine(dev.folder).connect() as connection:
        return list(connection.execute(query).scalars())


RUNS = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def _runs(dev: DagsterDev, **run_filter: Any) -> list[dict[str, Any]]:
    answer = dev.graphql(RUNS, {"filter": run_filter})
    return answer["data"]["runsOrError"]["results"]


def _wait_for(what: str, check: Any, timeout: float, dev: DagsterDev) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}\n{dev.log_tail()}")


def _finished(dev: DagsterDev, runs: list[dict[str, Any]]) -> bool:
    statuses = {run["status"] for run in runs}
    failed = statuses & {"FAILURE", "CANCELED"}
    assert not failed, f"runs ended {failed}: {runs}\n{dev.log_tail()}"
    return bool(runs) and statuses == {"SUCCESS"}


def test_a_person_materialises_one_partition_by_clicking(
    dagster_dev: DagsterDev, page: Page
) -> None:
    started = time.monotonic()
    page.goto(f"{dagster_dev.url}/assets/shop/orders", timeout=120_000)
    page.get_by_role("button", name="Materialize").first.wait_for(timeout=120_000)
    # The UI greets a first visit with a community dialog, a moment after the page loads.
    try:
        page.get_by_role("button", name="Skip").click(timeout=20_000)
    except PlaywrightTimeout:
        pass
    page.screenshot(path=str(ARTIFACTS / "1_asset_page.png"))
    page.get_by_role("button", name="Materialize").first.click()
    # The box's placeholder changes as it fills, so type into it through the keyboard.
    page.get_by_placeholder("No matching partitions").click()
    page.keyboard.type("2026-11-02")
    page.keyboard.press("Enter")
    page.screenshot(path=str(ARTIFACTS / "2_launch_dialog.png"))
    page.get_by_role("button", name=re.compile(r"^Launch 1 run$")).click()

    tags = [{"key": "dagster/partition", "value": "2026-11-02"}]
    runs = _wait_for(
        "the clicked run to succeed",
        lambda: (
            (found := _runs(dagster_dev, tags=tags)) and _finished(dagster_dev, found) and found
        ),
        timeout=240,
        dev=dagster_dev,
    )
    click_to_success = time.monotonic() - started
    page.goto(f"{dagster_dev.url}/runs/{runs[0]['runId']}")
    page.get_by_text("RUN_SUCCESS").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "3_run_succeeded.png"))

    assert len(runs) == 1
    landed = _warehouse(
        dagster_dev, "select id from shop.orders where _batch_key = '2026-11-02' order by id"
    )
    assert [row[0] for row in landed] == _source_order_ids(dagster_dev, "2026-11-02")
    print(f"click to success: {click_to_success:.1f} s")


BACKFILL = """mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL_STATUS = """query Status($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } } }"""


def run_backfill(dev: DagsterDev, asset: list[str], partitions: list[str]) -> str:
    """Launch a backfill of `asset` through GraphQL, as the UI does; wait until it completes."""
    answer = dev.graphql(
        BACKFILL,
        {
            "params": {
                "partitionNames": partitions,
                "assetSelection": [{"path": asset}],
                "fromFailure": False,
            }
        },
    )
    launched = answer["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def status() -> str | None:
        found = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})
        value = found["data"]["partitionBackfillOrError"]["status"]
        assert value not in ("FAILED", "CANCELED"), dev.log_tail()
        return value if value in ("COMPLETED", "COMPLETED_SUCCESS") else None

    _wait_for(f"the backfill of {'/'.join(asset)}", status, timeout=300, dev=dev)
    return backfill_id


def test_a_backfill_over_a_date_range_lands_every_partition_exactly_once(
    dagster_dev: DagsterDev,
) -> None:
    days = ["2026-11-03", "2026-11-04", "2026-11-05"]
    backfill_id = run_backfill(dagster_dev, ["shop", "orders"], days)
    runs = _runs(dagster_dev, tags=[{"key": "dagster/backfill", "value": backfill_id}])
    assert len(runs) == 1, "a database backfill runs as one run"
    assert _finished(dagster_dev, runs)
    for day in days:
        landed = _warehouse(
            dagster_dev, "select id from shop.orders where _batch_key = ? order by id", [day]
        )
        assert [row[0] for row in landed] == _source_order_ids(dagster_dev, day), day
    duplicates = _warehouse(dagster_dev, "select count(*) - count(distinct id) from shop.orders")
    assert duplicates == [(0,)]


def _event_ids(dev: DagsterDev) -> list[int]:
    return [
        row[0] for row in _warehouse(dev, "select id from shop_events.order_events order by id")
    ]


def _cut_partitions(dev: DagsterDev) -> list[str]:
    answer = dev.graphql(
        """{ assetNodeOrError(assetKey: {path: ["shop_events", "order_events"]}) {
             ... on AssetNode { partitionKeys } } }"""
    )
    return answer["data"]["assetNodeOrError"]["partitionKeys"]


def _all_sensor_runs_done(dev: DagsterDev, partitions: int) -> list[dict[str, Any]] | None:
    runs = _runs(dev, tags=[{"key": "dagster/sensor_name", "value": "shop_events__size_sensor"}])
    return runs if len(runs) == partitions and _finished(dev, runs) else None


def _assert_contiguous(cut: list[str]) -> int:
    """The cut ranges follow each other with no gap and no overlap; returns the last end."""
    previous = ""
    for key in cut:
        lo, hi = key.split("..")
        assert lo == previous, f"{key} does not start where the previous cut ended: {cut}"
        previous = hi
    return int(previous)


def test_the_daemon_cuts_size_partitions_and_resumes_after_a_restart(
    dagster_dev: DagsterDev,
) -> None:
    # The demo declares shop_events' sensor running: its ticks cut 1,000-row partitions.
    dev = dagster_dev
    # 2,500 rows wait at the first tick: two full batches, cut as one slice by one run.
    first = lambda: _cut_partitions(dev) and _assert_contiguous(_cut_partitions(dev)) >= 2000  # noqa: E731
    _wait_for("the sensor's first cuts", first, 180, dev)
    cut = _cut_partitions(dev)
    _wait_for("the sensor's runs", lambda: _all_sensor_runs_done(dev, len(cut)), 300, dev)
    assert cut == ["..2000"]
    assert _event_ids(dev) == list(range(1, _assert_contiguous(cut) + 1))

    # Stop the daemon (and the rest of dagster dev), record more rows, start it again.
    dev.stop()
    with _shop_engine(dev.folder).begin() as connection:
        shop.append_events(
            connection, 1500, first_id=SEED.events + 1, rng=random.Random(1), seed=SEED
        )
    dev.start()

    _wait_for(
        "cuts after the restart", lambda: _assert_contiguous(_cut_partitions(dev)) >= 4000, 180, dev
    )
    cut = _cut_partitions(dev)
    _wait_for("the runs after the restart", lambda: _all_sensor_runs_done(dev, len(cut)), 300, dev)
    # No range was cut twice and none skipped, and every row landed exactly once.
    assert _assert_contiguous(cut) == 4000
    assert _event_ids(dev) == list(range(1, 4001))


def test_runs_and_partitions_live_in_the_configured_storage(
    dagster_dev: DagsterDev, storage: str | None
) -> None:
    run_ids = sorted(run["runId"] for run in _runs(dagster_dev))
    keys = _cut_partitions(dagster_dev)
    if storage is None:
        # `make demo`'s instance: SQLite files under DAGSTER_HOME (the run index, and the event
        # log's index, which holds dynamic partitions).
        history = dagster_dev.home / "history"
        runs_db = sa.create_engine(f"sqlite:///{history / 'runs.db'}")
        events_db = sa.create_engine(f"sqlite:///{history / 'runs' / 'index.db'}")
    else:
        runs_db = events_db = sa.create_engine(storage)
    try:
        with runs_db.connect() as connection:
            stored_runs = connection.execute(sa.text("select run_id from runs")).scalars().all()
        with events_db.connect() as connection:
            stored_keys = (
                connection.execute(
                    sa.text(
                        "select partition from dynamic_partitions where partitions_def_name = :name"
                    ),
                    {"name": "shop_events__order_events"},
                )
                .scalars()
                .all()
            )
    finally:
        runs_db.dispose()
        events_db.dispose()
    assert sorted(stored_runs) == run_ids
    assert sorted(stored_keys) == sorted(keys)
    assert len(run_ids) >= 4  # the clicked run, the backfill's and the sensor's (one per cut)
