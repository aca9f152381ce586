"""The rate budget holds at the server's clock even when requests are delayed on the way."""

from __future__ import annotations

import random
import threading
import time

from ingestion_platform.connectors.rate_budget import Rate, RateBudget


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
