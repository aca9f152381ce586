"""Every benchmark under bench/ still imports against today's code, and has a `main`.

The benchmarks are run by hand, not by the suite, so a renamed function they use would
otherwise go unnoticed until someone wants a figure (bench/queues.py imported a class
that had been folded into core/message_landing.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def test_there_are_benchmarks() -> None:
    assert {"files", "kinesis", "queues", "s3", "sql_database"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_imports_and_has_a_main(script: str) -> None:
    module = importlib.import_module(f"bench.{script}")
    assert callable(module.main)
