"""DuckDB's extensions from their PyPI packages, so nothing is fetched from the internet.

At first use DuckDB downloads an extension from its repository, which a locked-down
deployment (and this project's CI) cannot reach. The `duckdb-extension-*` packages carry
the same binaries for one DuckDB release; pyproject.toml pins DuckDB to that release, so
the venv, the tests, a lake deployment and the benchmarks run one DuckDB.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import duckdb

from ingestion_platform.core.sql_quoting import quote_literal

# ducklake and postgres for the lake and its catalog; httpfs and aws for a data path in S3.
LAKE_EXTENSIONS = ("ducklake", "postgres", "httpfs", "aws")
# The scanners database sources read PostgreSQL and MySQL/MariaDB slices through.
SCANNER_EXTENSIONS = ("postgres", "mysql")


class ExtensionMissing(RuntimeError):
    """An extension the warehouse needs is not installed for the running DuckDB."""


@functools.cache
def install_packaged_extensions(names: tuple[str, ...] = LAKE_EXTENSIONS) -> None:
    """Install `names` into DuckDB's extension folder from their packages, once per process."""
    for name in names:
        try:
            package = importlib.import_module(f"duckdb_extension_{name}")
        except ImportError:
            raise ExtensionMissing(
                f"DuckDB's {name} extension is not installed. Fix: reinstall the project "
                f"(`make install`), which installs duckdb-extension-{name}"
            ) from None
        built_for = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
        binaries = sorted(built_for.glob("*.duckdb_extension"))
        if not binaries:
            raise ExtensionMissing(
                f"duckdb-extension-{name} has no build for DuckDB {duckdb.__version__}. Fix: "
                "install the DuckDB release pyproject.toml pins (`make install`)"
            )
        # INSTALL takes no parameter; the path is the package's own, quoted as a literal.
        duckdb.execute(f"install {quote_literal(str(binaries[0]))}")
