"""The columns of a slice of JSON records, inferred by DuckDB chunk by chunk.

`json_group_structure` over a whole large slice needs more memory than the warehouse's cap
(it failed at 200,000 records in 256 MB), so it runs over chunks and the structures are
merged here: the same key with two types becomes the wider one (BIGINT and DOUBLE give
DOUBLE), anything else incompatible becomes JSON; no key is ever dropped.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from ingestion_platform.core.column_names import without_case_clashes

CHUNK_ROWS = 25_000
VALID_OBJECT = "case when json_valid(payload) then json_type(payload) = 'OBJECT' else false end"
_NUMBERS = {"UBIGINT", "BIGINT", "DOUBLE"}


def infer_structure(connection: duckdb.DuckDBPyConnection, rows: pa.Table) -> dict[str, Any]:
    """Every top-level key of the slice's JSON objects and its DuckDB structure type."""
    merged: dict[str, Any] = {}
    for offset in range(0, rows.num_rows, CHUNK_ROWS):
        chunk = rows.select(["payload"]).slice(offset, CHUNK_ROWS)
        connection.register("structure_chunk", chunk)
        try:
            ((text,),) = connection.execute(
                "select json_group_structure(payload::json) from structure_chunk "  # noqa: S608
                f"where {VALID_OBJECT}"
            ).fetchall()
        finally:
            connection.unregister("structure_chunk")
        if text:
            merged = merge(merged, json.loads(text))
    return without_case_clashes({key: signed(kind) for key, kind in merged.items()})


def merge(left: Any, right: Any) -> Any:
    """The structure that holds values of both `left` and `right`."""
    if left == right or right == "NULL":
        return left
    if left == "NULL" or left == {}:
        return right
    if isinstance(left, dict) and isinstance(right, dict):
        keys = list(left) + [key for key in right if key not in left]
        return {key: merge(left.get(key, "NULL"), right.get(key, "NULL")) for key in keys}
    if isinstance(left, list) and isinstance(right, list) and left and right:
        return [merge(left[0], right[0])]
    if isinstance(left, str) and isinstance(right, str) and {left, right} <= _NUMBERS:
        return "DOUBLE" if "DOUBLE" in (left, right) else "BIGINT"
    return "JSON"


def signed(kind: Any) -> Any:
    """JSON numbers inferred as unsigned become BIGINT (a later batch may hold negatives)."""
    if isinstance(kind, dict):
        return {key: signed(value) for key, value in kind.items()}
    if isinstance(kind, list):
        return [signed(value) for value in kind]
    return {"UBIGINT": "BIGINT", "NULL": "JSON"}.get(kind, kind)
