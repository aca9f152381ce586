"""Benchmark: how long a one-partition CLI run takes, before and after the start-up fixes.

Both variants run `dagster asset materialize --select shop/orders --partition 2026-11-02`
in the demo's code location (`ingestion_platform.demo.definitions`; the user's location is
empty until a source is declared) over the demo shop (a SQLite file of a few hundred rows,
so the work itself is ~0.5 s and the rest is start-up), alternately, each round in fresh processes:

  before  Dagster's default multiprocess executor (a second Python process per step) and
          no bytecode cache (PYTHONPYCACHEPREFIX pointed at an empty folder, as in an image
          that sets PYTHONDONTWRITEBYTECODE and ships no .pyc files);
  after   the project as shipped: the in-process executor (definitions.py) and the bytecode
          `make install` compiles.

Prints each run's wall time and the ratio of the medians (after / before).

    .venv/bin/python bench/run_startup.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from ingestion_platform.demo import shop

PROJECT = Path(__file__).resolve().parent.parent
MULTIPROCESS_DEFS = """
from pathlib import Path
import dagster as dg
import ingestion_platform.demo.defs as demo_sources
from ingestion_platform.core.warehouse import WarehouseResource

@dg.definitions
def defs() -> dg.Definitions:
    declared = dg.load_defs(defs_root=demo_sources, project_root=Path.cwd())
    return dg.Definitions.merge(
        declared,
        dg.Definitions(
            resources={"warehouse": WarehouseResource()}, executor=dg.multiprocess_executor
        ),
    )
"""


def _run(target: list[str], env: dict[str, str], cwd: Path) -> float:
    command = [
        str(PROJECT / ".venv/bin/dagster"), "asset", "materialize", *target,
        "--select", "shop/orders", "--partition", "2026-11-02",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "RUN_SUCCESS" not in done.stderr + done.stdout:
        sys.exit(f"run failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="one run of the project as shipped (make test)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        work = Path(folder)
        # The demo declaration reads sqlite:///data/demo/shop.sqlite relative to the cwd.
        (work / "data/demo").mkdir(parents=True)
        shop.create_shop(sa.create_engine(f"sqlite:///{work / 'data/demo/shop.sqlite'}"))
        (work / "home").mkdir()
        (work / "home/dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (work / "defs_multiprocess.py").write_text(MULTIPROCESS_DEFS)
        base = {
            **os.environ,
            "DAGSTER_HOME": str(work / "home"),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "INGESTION_WAREHOUSE_PATH": str(work / "warehouse.duckdb"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if args.smoke:
            elapsed = _run(["-m", "ingestion_platform.demo.definitions"], base, work)
            print(f"smoke: one-partition run of the demo's shop/orders in {elapsed:.2f} s")
            return
        times: dict[str, list[float]] = {"before": [], "after": []}
        for round_number in range(1, args.rounds + 1):
            uncached = {**base, "PYTHONPYCACHEPREFIX": str(work / f"empty-{round_number}")}
            before = ["-f", str(work / "defs_multiprocess.py")]
            times["before"].append(_run(before, uncached, work))
            times["after"].append(_run(["-m", "ingestion_platform.demo.definitions"], base, work))
            print(
                f"round {round_number}: before {times['before'][-1]:.2f} s, "
                f"after {times['after'][-1]:.2f} s"
            )
        before, after = (statistics.median(times[name]) for name in ("before", "after"))
        ratio = after / before
        print(f"median: before {before:.2f} s, after {after:.2f} s, after/before {ratio:.2f}")


if __name__ == "__main__":
    main()
