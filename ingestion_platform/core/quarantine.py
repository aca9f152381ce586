"""One quarantine shape for every source kind: what could not be landed, where, and why.

Rows a reader rejects (a CSV value of the wrong type, a Kinesis record that is not JSON)
go to `<source>._quarantine` in the same transaction as the good rows, so the counts always
reconcile: read = landed + quarantined. `file` says where the row came from (a file path,
or `shardId-…:<sequence number>` for a stream), `line` where in it. `raw` keeps a file
row's original bytes: `raw_value` is text, where bytes the reader could not decode are lost.
"""

from __future__ import annotations

import duckdb

from ingestion_platform.core.warehouse import quote_identifier

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
