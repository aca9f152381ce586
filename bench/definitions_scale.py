"""Benchmark: how long definitions take to load as the number of declared sources grows.

A temporary dg project declares N sources, alternately copies of the demo's `shop` (daily,
two tables, a schedule) and `shop_events` (a size sensor), and a fresh Python process times
what every run process and code server does: load the definitions (`defs()`, which walks
the component tree and builds each component) and resolve them (the asset graph and every
job). The anchor is the same process loading 1 source, so the ratio shows how the cost
grows. Nothing is reachable and no secret is set, as in a real code server at start-up.
The work is one thread, so its CPU seconds are what it takes on a machine nobody shares;
the wall seconds also count the time other processes held the cores.

    .venv/bin/python bench/definitions_scale.py --sources 1 200 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEMO_DEFS = PROJECT / "ingestion_platform" / "demo" / "defs"
PYPROJECT = """[project]
name = "scale_project"
version = "0"
[tool.dg]
directory_type = "project"
[tool.dg.project]
root_module = "scale_project"
registry_modules = ["ingestion_platform.sources.*.component"]
"""
# The project's own definitions.py, with its loader.
DEFINITIONS = """from pathlib import Path
import dagster as dg
from ingestion_platform.definitions import load_declared_sources, platform_definitions

@dg.definitions
def defs():
    return platform_definitions(load_declared_sources(Path(__file__).parent))
"""
MEASURE = """
import json, time
started = time.perf_counter()
from scale_project.definitions import defs
imported = time.perf_counter()
cpu = time.process_time()
loaded = defs()
built = time.perf_counter()
graph = loaded.resolve_asset_graph()
jobs = loaded.resolve_all_job_defs()
resolved = time.perf_counter()
print(json.dumps({"assets": len(list(graph.get_all_asset_keys())), "jobs": len(jobs),
                  "import_s": imported - started, "load_s": built - imported,
                  "resolve_s": resolved - built, "cpu_s": time.process_time() - cpu}))
"""


def _project(root: Path, sources: int) -> None:
    package = root / "scale_project"
    (package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    for number in range(1, sources + 1):
        template = "shop" if number % 2 == 0 else "shop_events"
        folder = package / "defs" / f"source_{number}"
        folder.mkdir()
        shutil.copy(DEMO_DEFS / template / "defs.yaml", folder / "defs.yaml")


def _measure(sources: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-defs-") as folder:
        root = Path(folder)
        _project(root, sources)
        done = subprocess.run(
            [sys.executable, "-c", MEASURE],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, nargs="+", default=[1, 200, 1000])
    args = parser.parse_args()
    anchor = None
    print(
        "sources | assets | jobs | import s | load s | resolve s | load+resolve s | CPU s"
        " | × 1 source"
    )
    for count in args.sources:
        figures = _measure(count)
        total = figures["load_s"] + figures["resolve_s"]
        anchor = anchor or total
        print(
            f"{count} | {figures['assets']} | {figures['jobs']} | {figures['import_s']:.1f}"
            f" | {figures['load_s']:.1f}"
            f" | {figures['resolve_s']:.1f} | {total:.1f} | {figures['cpu_s']:.1f}"
            f" | {total / anchor:.0f}"
        )


if __name__ == "__main__":
    main()
