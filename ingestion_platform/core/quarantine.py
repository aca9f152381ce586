"""One quarantine shape for every source kind: what could not be landed, where, and why.

Rows a reader rejects (a CSV value of the wrong type, a Kinesis record that is not JSON)
go to `<source>._quarantine` in the same transaction as the good rows, so the counts always
reconcile: read = landed + quarantined. `file` says where the row came from (a file path,
or `shardId-…:<sequence number>` for a stream), `line` where in it. `raw` keeps a file
row's original bytes: `raw_value` is text, where bytes the reader could not decode are lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from ingestion_platform.core.sql_quoting import quote_literal
from ingestion_platform.core.warehouse import Warehouse, quote_identifier

QUARANTINE_TABLE = "_quarantine"
QUARANTINE_COLUMNS = (
    "source varchar, file varchar, line bigint, column_name varchar, reason varchar, "
    "raw_value varchar, _batch_key varchar, _loaded_at timestamptz, raw blob"
)


def ensure_quarantine(connection: duckdb.DuckDBPyConnection, schema: str) -> str:
    """Create `<schema>._quarantine` if needed, in the caller's transaction; its relation."""
    relation = f"{quote_identifier(schema)}.{quote_identifier(QUARANTINE_TABLE)}"
    connection.execute(f"create table if not exists {relation} ({QUARANTINE_COLUMNS})")
    # A quarantine created before `raw` existed gets it (NULL for its earlier rows).
    connection.execute(f"alter table {relation} add column if not exists raw blob")
    return relation


@dataclass(frozen=True)
class QuarantineSummary:
    """What a landing quarantined, for its check: the top reasons and a few rejected rows."""

    reasons: list[tuple[str, int]]
    # (where: file:line or shard:sequence, reason, raw value), the first few by place.
    sample: list[tuple[str, str, str]]
    query: str


def summarize_quarantine(
    warehouse: Warehouse, schema: str, keys: Sequence[str], most: int = 5
) -> QuarantineSummary | None:
    """The `most` commonest reasons and first rejected rows of slices `keys`; None if none."""
    if not warehouse.table_exists(schema, QUARANTINE_TABLE):
        return None
    relation = f"{quote_identifier(schema)}.{quote_identifier(QUARANTINE_TABLE)}"
    where = "where _batch_key in (select unnest(?))"
    reasons = warehouse.query(
        f"select reason, count(*) from {relation} {where} "  # noqa: S608
        f"group by reason order by count(*) desc, reason limit {int(most)}",
        (list(keys),),
    )
    if not reasons:
        return None
    rows = warehouse.query(
        f"select file, line, reason, raw_value from {relation} {where} "  # noqa: S608
        f"order by file, line limit {int(most)}",
        (list(keys),),
    )
    sample = [
        (f"{file}:{line}" if line is not None else str(file), reason, _clip(raw))
        for file, line, reason, raw in rows
    ]
    keys_sql = ", ".join(quote_literal(key) for key in keys)
    # Shown to the user to run, never executed here; every key is quoted.
    query = f"select * from {relation} where _batch_key in ({keys_sql}) order by file, line"  # noqa: S608
    return QuarantineSummary([(str(r), int(n)) for r, n in reasons], sample, query)


def _clip(value: object, limit: int = 120) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
