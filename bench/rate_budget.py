"""Overhead of the shared (file + flock) rate budget against the in-process one.

Each slot is taken and given back with nothing sent, under a budget far above the rate
reached, so the time measured is the budget's own bookkeeping: per slot, for one process,
and for N processes taking slots from one budget file at once.

    .venv/bin/python -m bench.rate_budget [--slots 20000] [--processes 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from ingestion_platform.sources.api.connectors.rate_budget import Rate, RateBudget
from ingestion_platform.sources.api.connectors.shared_budget import SharedRateBudget

# Windows of a nanosecond: the budget never makes a slot wait, yet keeps `limit` stamps
# (10 = requests_per_second: 10; 500 = requests_per_minute: 500, the largest state).
SMALL = [Rate(limit=10, interval_seconds=1e-9)]
LARGE = [Rate(limit=500, interval_seconds=1e-9)]


def _per_slot_us(budget: RateBudget | SharedRateBudget, slots: int) -> float:
    started = time.perf_counter()
    for _ in range(slots):
        with budget.slot():
            pass
    return (time.perf_counter() - started) / slots * 1e6


def _worker(path: str, slots: int, out: multiprocessing.Queue) -> None:
    out.put(_per_slot_us(SharedRateBudget(SMALL, Path(path)), slots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.json"
        local, shared, large, contended = [], [], [], []
        for _ in range(args.rounds):
            local.append(_per_slot_us(RateBudget(SMALL), args.slots))
            shared.append(_per_slot_us(SharedRateBudget(SMALL, path), args.slots))
            large.append(_per_slot_us(SharedRateBudget(LARGE, path), args.slots))
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            workers = [
                context.Process(target=_worker, args=(str(path), args.slots // 4, queue))
                for _ in range(args.processes)
            ]
            for worker in workers:
                worker.start()
            contended.append(statistics.mean(queue.get() for _ in workers))
            for worker in workers:
                worker.join()
    print(f"µs per slot (median of {args.rounds} rounds of {args.slots} slots)")
    print(f"  in-process RateBudget:              {statistics.median(local):8.1f}")
    print(f"  SharedRateBudget, 1 process:        {statistics.median(shared):8.1f}")
    print(f"  ... 500 stamps kept (per minute):   {statistics.median(large):8.1f}")
    print(
        f"  SharedRateBudget, {args.processes} processes at once: "
        f"{statistics.median(contended):8.1f} (each)"
    )


if __name__ == "__main__":
    main()
