"""DuckLake's DuckDB extensions, installed from their PyPI packages for the lake-contract run.

At first use DuckDB downloads an extension from its repository; this machine reaches only
loopback. The `duckdb-extension-*` packages carry the same binaries, built for DuckDB 1.5.5,
so `make test` installs them with that DuckDB into `.ducklake/` and runs the lake-contract
modules with it ahead of the venv's DuckDB on PYTHONPATH.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import duckdb
import pytest

# httpfs and aws for a data path in S3 (moto here).
LAKE_EXTENSIONS = ("ducklake", "postgres", "httpfs", "aws")


@functools.cache
def install_lake_extensions() -> None:
    """Install the lake's extensions into DuckDB's extension folder, once per process."""
    for name in LAKE_EXTENSIONS:
        try:
            package = importlib.import_module(f"duckdb_extension_{name}")
        except ImportError:
            pytest.fail(
                f"duckdb-extension-{name} is not importable: run the lake-contract tests as "
                "`make test` does, with PYTHONPATH=.ducklake"
            )
        built_for = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
        binaries = sorted(built_for.glob("*.duckdb_extension"))
        if not binaries:
            pytest.fail(f"duckdb-extension-{name} has no build for DuckDB {duckdb.__version__}")
        duckdb.execute(f"install '{binaries[0]}'")
