"""Land staged files into DuckDB: one transaction replaces the partition's rows and bad rows.

DuckDB reads each staged file straight into the table (sources/files/connectors/formats.py), so
there is one pass over the data. The table's columns come from the files: a new column is
added with `ALTER TABLE` in the same transaction (names normalised the way dlt names every
other source's columns), and listed in the metadata; its type follows one rule whatever
the order files arrive in (connectors/column_types.py). Rows a reader rejects go to the
source's `_quarantine` table with their original bytes, in the same transaction, so the
counts always reconcile: rows read = rows landed + rows quarantined. A file quarantined
whole counts as its records (as far as they can be told), so it weighs on the share.

A file that cannot be read at all fails its INSERT, which aborts DuckDB's transaction; the
transaction is then rolled back and replayed without that file (quarantined whole with its
reason), or the run fails, as `on_bad_file` says. Nothing is visible until the commit, so
a killed run leaves the warehouse as it was.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import duckdb
from dlt.common.normalizers.naming.snake_case import NamingConvention

from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.quarantine import QUARANTINE_TABLE, ensure_quarantine
from ingestion_platform.core.sql_quoting import quote_literal
from ingestion_platform.core.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    Warehouse,
    delete_slices,
    quote_identifier,
)
from ingestion_platform.sources.files.connectors.column_types import (
    canonical_types,
    landing_choices,
    settle_types,
)
from ingestion_platform.sources.files.connectors.formats import (
    FileRead,
    UnreadableFile,
    bad_rows,
    csv_row_fix,
    select_rows,
)
from ingestion_platform.sources.files.connectors.records import raw_records
from ingestion_platform.sources.files.connectors.sniff import unread_rows, unreadable_reason

_SYSTEM_COLUMNS = {"_file": "VARCHAR", "_row": "BIGINT", BATCH_KEY_COLUMN: "VARCHAR"}
_NAMING = NamingConvention()


@dataclass
class FileLandingReport:
    """What one file landing did: counts per file, quarantine, schema drift."""

    rows_read: int = 0
    rows_landed: int = 0
    rows_quarantined: int = 0
    bad_files: dict[str, str] = field(default_factory=dict)
    # Files quarantined whole and the records each holds (counted in rows_quarantined).
    bad_file_rows: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    new_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    # A table's first landing creates its columns; only later additions are schema drift.
    table_created: bool = False


class ColumnRetypeError(ValueError):
    """A declared type the table's existing values of that column cannot be converted to."""

    def __init__(self, column: str, problem: str) -> None:
        super().__init__(problem)
        self.column = column


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
    unread: dict[str, int] | None = None,
) -> FileLandingReport:
    """Replace the rows of `batch_key` in `source.table` (and its quarantine) with `reads`.

    `unread`: how many records each unreadable file holds (1 each when not given)."""
    warehouse.check_dataset(source)
    started = time.monotonic()
    bad = dict(unreadable)
    counts = {label: (unread or {}).get(label, 1) for label in bad}
    if bad and on_bad_file == "fail":
        label, reason = next(iter(bad.items()))
        raise UnreadableFile(_cannot_read(label, reason))
    with warehouse.exclusive():
        while True:
            usable = [r for r in reads if r.label not in bad]
            try:
                report = _commit(warehouse, source, table, batch_key, usable, bad, counts)
                break
            except _FileFailed as failed:
                if on_bad_file == "fail":
                    raise UnreadableFile(_cannot_read(failed.label, failed.reason)) from None
                bad[failed.label] = failed.reason
                read = next(r for r in reads if r.label == failed.label)
                counts[failed.label] = unread_rows(read.local_path, read.label, read.options)
    report.duration_seconds = time.monotonic() - started
    return report


def _cannot_read(label: str, reason: str) -> str:
    return reason if reason.startswith(label) else f"{label} cannot be read: {reason}"


def _commit(
    warehouse: Warehouse,
    source: str,
    table: str,
    batch_key: str,
    reads: list[FileRead],
    bad: dict[str, str],
    counts: dict[str, int],
) -> FileLandingReport:
    report = FileLandingReport(bad_files=dict(bad), bad_file_rows=dict(counts))
    schema = quote_identifier(source)
    relation = f"{schema}.{quote_identifier(table)}"
    loaded_at = datetime.now(UTC)
    names = column_names(reads)
    connection = warehouse.open_writer()
    try:
        # JSON Lines' row_number() over () numbers lines in file order only while insertion
        # order holds (CSV rows take a sequence over a serial scan: formats.select_rows).
        connection.execute("set preserve_insertion_order = true")
        connection.execute("begin")
        connection.execute(f"create schema if not exists {schema}")
        quarantine = ensure_quarantine(connection, source)
        _settle_types(connection, source, table, reads, names)
        report.table_created = not fetch_row(
            connection,
            "select 1 from information_schema.tables where table_schema = ? and table_name = ?",
            [source, table],
        )
        added = _evolve(connection, source, table, reads, names)
        # The first landing creates the columns: that is not drift.
        report.new_columns = [] if report.table_created else added
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
            numbering = f"_row_numbers_{index}"
            try:
                connection.execute(f"create or replace temp sequence {numbering} start 1")
                # A JSON Lines file with no object line still has its bad lines to keep.
                landed = (
                    0
                    if read.empty
                    else connection.execute(
                        f"insert into {relation} by name select *, {stamp} "  # noqa: S608
                        f"from ({select_rows(read, names, rejects, numbering)})",
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
                if quarantined and read.format != "parquet":
                    _keep_raw_bytes(connection, quarantine, read, batch_key)
            except duckdb.Error as error:
                connection.execute("rollback")
                raise _FileFailed(read.label, unreadable_reason(error, read)) from None
            report.rows_by_file[read.label] = landed
            report.rows_landed += landed
            report.rows_quarantined += quarantined
        for label, reason in bad.items():
            connection.execute(
                f"insert into {quarantine} (source, file, reason, _batch_key, _loaded_at) "  # noqa: S608
                "values (?, ?, ?, ?, ?)",
                [source, label, f"file not read: {reason}", batch_key, loaded_at],
            )
            report.rows_quarantined += counts.get(label, 1)
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


def _settle_types(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    reads: list[FileRead],
    names: dict[str, str],
) -> None:
    """Read every column with its one type (declared, the table's, or the values' choice):
    a value that does not fit becomes a rejected row, quarantined, instead of failing the
    whole file, being cast to NULL, or turning the column into text."""
    existing = dict(
        connection.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [source, table],
        ).fetchall()
    )
    declared = canonical_types(connection, reads[0].options.declared) if reads else {}
    relation = f"{quote_identifier(source)}.{quote_identifier(table)}"
    for name, kind in declared.items():
        column = names.get(name, name)
        if existing.get(column, kind) == kind:
            continue
        # A column landed before it was declared (or declared otherwise) takes the declared
        # type now, or the landing stops: its old values are never cast to NULL.
        try:
            _retype(connection, relation, column, kind)
        except duckdb.Error as error:
            connection.execute("rollback")
            first = str(error).strip().splitlines()[0].split(": ", 1)[-1]
            # The lake's copy (_retype) names the column it casts from; the file's ALTER not.
            first = re.sub(r" when casting from source column \S+", "", first)
            raise ColumnRetypeError(
                name,
                f"the table {source}.{table} holds {column} as {existing[column]}, and its "
                f"landed values do not all convert to {kind} ({first})",
            ) from None
        existing[column] = kind
    fixed = {names.get(name, name) for name in declared}
    for column, kind in landing_choices(reads, names).items():
        if kind == "VARCHAR" or existing.get(column) != "VARCHAR" or column in fixed:
            continue
        # Created before any value arrived (text by default): the first values choose.
        has_values = fetch_row(
            connection,
            f"select 1 from {relation} where {quote_identifier(column)} is not null limit 1",  # noqa: S608
        )
        if not has_values:
            _retype(connection, relation, column, kind)
            existing[column] = kind
    settle_types(reads, names, existing, declared)


def _retype(connection: duckdb.DuckDBPyConnection, relation: str, column: str, kind: str) -> None:
    """Change `column` to `kind`, converting its values; raises if one does not convert.

    A DuckLake alters a column's type only by widening it, so there the values are copied
    into a new column of the type (the same strict cast), which then takes the old one's
    name and moves to the end of the table.
    """
    quoted = quote_identifier(column)
    in_lake = fetch_row(
        connection,
        "select type = 'ducklake' from duckdb_databases() where database_name = current_database()",
    ) == (True,)
    if not in_lake:
        connection.execute(f"alter table {relation} alter {quoted} type {kind}")
        return
    staged = quote_identifier(f"_retyped_{column}")
    connection.execute(f"alter table {relation} add column {staged} {kind}")
    connection.execute(f"update {relation} set {staged} = cast({quoted} as {kind})")  # noqa: S608
    connection.execute(f"alter table {relation} drop column {quoted}")
    connection.execute(f"alter table {relation} rename column {staged} to {quoted}")


def _keep_raw_bytes(
    connection: duckdb.DuckDBPyConnection, quarantine: str, read: FileRead, batch_key: str
) -> None:
    """Store each quarantined record's original bytes (the text columns hold it decoded,
    where an undecodable byte became `?`), so a fixed reader can replay them."""
    where = "file = ? and _batch_key = ? and raw is null and line is not null"
    lines = {
        line
        for (line,) in connection.execute(
            f"select line from {quarantine} where {where}",  # noqa: S608
            [read.label, batch_key],
        ).fetchall()
    }
    quote = read.options.quote or None if read.format == "csv" else None
    found = raw_records(read.local_path, quote, lines)
    if found:
        connection.executemany(
            f"update {quarantine} set raw = ? where file = ? and _batch_key = ? and line = ?",  # noqa: S608
            [[raw, read.label, batch_key, line] for line, raw in found.items()],
        )


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
