"""Land staged files into DuckDB: one transaction replaces the partition's rows and bad rows.

DuckDB reads each staged file straight into the table (connectors/file_formats.py), so
there is one pass over the data. The table's columns come from the files: a new column is
added with `ALTER TABLE` in the same transaction (names normalised the way dlt names every
other source's columns), and listed in the metadata. Rows a reader rejects go to the
source's `_quarantine` table, in the same transaction, so the counts always reconcile:
rows read = rows landed + rows quarantined.

A file that cannot be read at all fails its INSERT, which aborts DuckDB's transaction; the
transaction is then rolled back and replayed without that file (quarantined whole with its
reason), or the run fails, as `on_bad_file` says. Nothing is visible until the commit, so
a killed run leaves the warehouse as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import duckdb
from dlt.common.normalizers.naming.snake_case import NamingConvention

from ingestion_platform.connectors.duckdb_results import fetch_row
from ingestion_platform.connectors.file_formats import (
    FileRead,
    UnreadableFile,
    bad_rows,
    csv_row_fix,
    select_rows,
)
from ingestion_platform.connectors.sql_quoting import quote_literal
from ingestion_platform.quarantine import QUARANTINE_TABLE, ensure_quarantine
from ingestion_platform.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    Warehouse,
    delete_slices,
    quote_identifier,
)

_SYSTEM_COLUMNS = {"_file": "VARCHAR", "_row": "BIGINT", BATCH_KEY_COLUMN: "VARCHAR"}
_NAMING = NamingConvention()


@dataclass
class FileLandingReport:
    """What one file landing did: counts per file, quarantine, schema drift."""

    rows_read: int = 0
    rows_landed: int = 0
    rows_quarantined: int = 0
    bad_files: dict[str, str] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    new_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    # A table's first landing creates its columns; only later additions are schema drift.
    table_created: bool = False


class _FileFailed(Exception):
    def __init__(self, label: str, reason: str) -> None:
        super().__init__(reason)
        self.label = label
        self.reason = reason


def column_names(reads: list[FileRead]) -> dict[str, str]:
    """Every source column name → its warehouse name (dlt's snake_case naming)."""
    return {name: _NAMING.normalize_identifier(name) for r in reads for name in r.columns}


def land_files(
    *,
    warehouse: Warehouse,
    source: str,
    table: str,
    batch_key: str,
    reads: list[FileRead],
    unreadable: dict[str, str],
    on_bad_file: Literal["quarantine", "fail"],
) -> FileLandingReport:
    """Replace the rows of `batch_key` in `source.table` (and its quarantine) with `reads`."""
    started = time.monotonic()
    bad = dict(unreadable)
    if bad and on_bad_file == "fail":
        label, reason = next(iter(bad.items()))
        raise UnreadableFile(f"{label} cannot be read: {reason}")
    with warehouse.exclusive():
        while True:
            usable = [r for r in reads if r.label not in bad]
            try:
                report = _commit(warehouse, source, table, batch_key, usable, bad)
                break
            except _FileFailed as failed:
                if on_bad_file == "fail":
                    raise UnreadableFile(
                        f"{failed.label} cannot be read: {failed.reason}"
                    ) from None
                bad[failed.label] = failed.reason
    report.duration_seconds = time.monotonic() - started
    return report


def _commit(
    warehouse: Warehouse,
    source: str,
    table: str,
    batch_key: str,
    reads: list[FileRead],
    bad: dict[str, str],
) -> FileLandingReport:
    report = FileLandingReport(bad_files=dict(bad))
    schema = quote_identifier(source)
    relation = f"{schema}.{quote_identifier(table)}"
    loaded_at = datetime.now(UTC)
    names = column_names(reads)
    connection = warehouse.open_writer()
    try:
        # row_number() over () numbers rows in file order only while insertion order holds.
        connection.execute("set preserve_insertion_order = true")
        connection.execute("begin")
        connection.execute(f"create schema if not exists {schema}")
        quarantine = ensure_quarantine(connection, source)
        _adopt_table_types(connection, source, table, reads, names)
        report.table_created = not fetch_row(
            connection,
            "select 1 from information_schema.tables where table_schema = ? and table_name = ?",
            [source, table],
        )
        report.new_columns = _evolve(connection, source, table, reads, names)
        delete_slices(connection, source, [table, QUARANTINE_TABLE], [batch_key])
        stamp = (
            f"{quote_literal(batch_key)} as {quote_identifier(BATCH_KEY_COLUMN)}, "
            f"$1::timestamptz as {quote_identifier(LOADED_AT_COLUMN)}"
        )
        for index, read in enumerate(reads):
            if read.empty and read.format != "jsonl":
                report.rows_by_file[read.label] = 0
                continue
            rejects = f"_rejects_{index}"
            try:
                # A JSON Lines file with no object line still has its bad lines to keep.
                landed = (
                    0
                    if read.empty
                    else connection.execute(
                        f"insert into {relation} by name select *, {stamp} "  # noqa: S608
                        f"from ({select_rows(read, names, rejects)})",
                        [loaded_at],
                    ).fetchall()[0][0]
                )
                quarantined = connection.execute(
                    f"insert into {quarantine} by name select {quote_literal(source)} as source, "  # noqa: S608
                    f"*, {stamp} from ({bad_rows(read, rejects)})",
                    [loaded_at],
                ).fetchall()[0][0]
                if quarantined and read.format == "csv":
                    connection.execute(
                        csv_row_fix(relation, rejects, read.label, batch_key, read.options.header)
                    )
            except duckdb.Error as error:
                connection.execute("rollback")
                raise _FileFailed(read.label, str(error).strip().splitlines()[0]) from None
            report.rows_by_file[read.label] = landed
            report.rows_landed += landed
            report.rows_quarantined += quarantined
        for label, reason in bad.items():
            connection.execute(
                f"insert into {quarantine} (source, file, reason, _batch_key, _loaded_at) "  # noqa: S608
                "values (?, ?, ?, ?, ?)",
                [source, label, f"file not read: {reason}", batch_key, loaded_at],
            )
        report.columns = dict(
            connection.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [source, table],
            ).fetchall()
        )
        connection.execute("commit")
    finally:
        connection.close()
    report.rows_read = report.rows_landed + report.rows_quarantined
    return report


def _adopt_table_types(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    reads: list[FileRead],
    names: dict[str, str],
) -> None:
    """Read CSV and JSON Lines columns the table already has with the table's type.

    A sniffed type only describes the sniffed sample (or, for JSON Lines, the union of the
    file's values): one bad value makes the column text. Read with the table's type, the
    bad value becomes a rejected row, quarantined, instead of failing the whole file or
    being cast to NULL.
    """
    existing = dict(
        connection.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [source, table],
        ).fetchall()
    )
    for read in reads:
        if read.format in ("csv", "jsonl"):
            read.columns = {
                name: existing.get(names[name], kind) for name, kind in read.columns.items()
            }


def _evolve(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    reads: list[FileRead],
    names: dict[str, str],
) -> list[str]:
    """Create the table or add the files' new columns; returns the columns added."""
    wanted: dict[str, str] = {}
    for read in reads:
        for name, kind in read.columns.items():
            wanted.setdefault(names[name], kind)
    if not wanted:
        return []
    wanted.update(_SYSTEM_COLUMNS)
    wanted[LOADED_AT_COLUMN] = "TIMESTAMP WITH TIME ZONE"
    existing = {
        name
        for (name,) in connection.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [source, table],
        ).fetchall()
    }
    relation = f"{quote_identifier(source)}.{quote_identifier(table)}"
    if not existing:
        columns = ", ".join(f"{quote_identifier(n)} {kind}" for n, kind in wanted.items())
        connection.execute(f"create table {relation} ({columns})")
        return [name for name in wanted if name not in _SYSTEM_COLUMNS and name != LOADED_AT_COLUMN]
    added = [name for name in wanted if name not in existing]
    for name in added:
        connection.execute(
            f"alter table {relation} add column {quote_identifier(name)} {wanted[name]}"
        )
    return added
