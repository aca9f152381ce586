"""Read a DuckDB query's single row without leaving a partial result on the connection.

DuckDB 2.0 refuses other work on a connection (`register`, an Arrow scan) while a result
is only partly fetched, and `fetchone()` leaves it so even for a one-row result. Landing
connections are reused for the whole transaction, so every single-row read goes through
here and fetches to the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb


def fetch_row(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: Sequence[Any] | None = None
) -> tuple[Any, ...] | None:
    """The first row of `sql` (None when it returns none), the result read to its end."""
    rows = connection.execute(sql, parameters).fetchall()
    return rows[0] if rows else None
