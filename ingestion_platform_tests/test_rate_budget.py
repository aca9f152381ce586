"""The rate budget holds at the server's clock even when requests are delayed on the way,
within one process and across processes sharing its file."""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import threading
import time
from multiprocessing import Queue
from pathlib import Path

from ingestion_platform.sources.api.connectors.rate_budget import (
    Rate,
    RateBudget,
    rates_per_second,
    wait_seconds,
)
from ingestion_platform.sources.api.connectors.shared_budget import (
    SharedRateBudget,
    _decode,
    _encode,
)


def test_no_window_ever_holds_more_than_the_limit_despite_jitter() -> None:
    budget = RateBudget([Rate(limit=5, interval_seconds=0.5)])
    arrivals: list[float] = []
    lock = threading.Lock()
    rng = random.Random(3)
    delays = [(rng.uniform(0, 0.08), rng.uniform(0, 0.03)) for _ in range(36)]

    def request(on_the_way: float, answering: float) -> None:
        with budget.slot():
            time.sleep(on_the_way)  # the request travels; the server stamps it on arrival
            with lock:
                arrivals.append(time.monotonic())
            time.sleep(answering)

    workers = [threading.Thread(target=request, args=pair) for pair in delays]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started

    arrivals.sort()
    closest = min(later - earlier for earlier, later in zip(arrivals, arrivals[5:], strict=False))
    assert closest >= 0.5, f"6 requests arrived within {closest:.3f}s"
    # ...and the budget is not wasted: 36 requests at 5 per 0.5 s take about 3.5 s, not much more.
    assert elapsed < 36 / 10 * 1.35


def test_a_minute_budget_holds_beside_the_second_one() -> None:
    # requests_per_second: 10 with requests_per_minute: 30, on a clock the test sets: the
    # first 30 requests go at 10 a second, then the 31st waits for the minute of the first.
    rates = rates_per_second(10, requests_per_minute=30)
    assert rates == [Rate(10, 1.0), Rate(30, 60.0)]
    completed: list[float] = []
    now = 0.0
    for _ in range(30):
        now += wait_seconds(rates, completed, 0, now)
        completed.append(now)
    assert completed[-1] == 2.0  # 10 at 0 s, 10 at 1 s, 10 at 2 s
    wait = wait_seconds(rates, completed, 0, now)
    assert wait == 58.0  # the first completion, at 0 s, leaves the minute at 60 s
    assert wait_seconds(rates, completed, 0, 60.0) == 0.0
    # A minute budget alone lets its whole allowance go at once.
    assert rates_per_second(None, requests_per_minute=30) == [Rate(30, 60.0)]
    assert wait_seconds([Rate(30, 60.0)], [0.0] * 29, 0, 0.0) == 0.0


def _send_from_a_process(path: str, delays: list[tuple[float, float]], out: Queue) -> None:
    budget = SharedRateBudget([Rate(limit=5, interval_seconds=0.5)], Path(path))
    for on_the_way, answering in delays:
        with budget.slot():
            time.sleep(on_the_way)
            out.put(time.monotonic())  # one clock for every process of the machine
            time.sleep(answering)


def test_processes_sharing_a_budget_file_never_exceed_it_together(tmp_path: Path) -> None:
    rng = random.Random(5)
    queue: Queue = multiprocessing.get_context("spawn").Queue()
    workers = [
        multiprocessing.get_context("spawn").Process(
            target=_send_from_a_process,
            args=(
                str(tmp_path / "music.budget"),
                [(rng.uniform(0, 0.05), rng.uniform(0, 0.02)) for _ in range(8)],
                queue,
            ),
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    arrivals = sorted(queue.get(timeout=60) for _ in range(24))
    for worker in workers:
        worker.join(timeout=60)

    closest = min(later - earlier for earlier, later in zip(arrivals, arrivals[5:], strict=False))
    assert closest >= 0.5, f"6 requests from 3 processes arrived within {closest:.3f}s"


def test_a_slot_held_by_a_process_that_died_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "music.budget"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A worker killed mid-request left its slot in flight; the budget allows one at a time.
    path.write_bytes(_encode({"in_flight": [[dead.pid, 0, time.monotonic()]], "completed": []}))
    budget = SharedRateBudget([Rate(limit=1, interval_seconds=0.2)], path)

    started = time.monotonic()
    with budget.slot():
        waited = time.monotonic() - started
    # Counted as completed when found: one interval's wait, not a wait for ever.
    assert 0.15 <= waited < 0.5
    assert _decode(path.read_bytes())["in_flight"] == []
