"""Undo dlt's schema step when the landing that followed it failed.

dlt creates or migrates the warehouse table (and its own `_dlt_*` tables) in a transaction of
its own, before the slice's transaction starts. A read that then fails would leave behind an
empty table, or columns no row fills, and the stored schema version that says they exist. So
the landing notes what the dataset held before dlt's step and, on failure, puts it back under
the same lock: a failed run leaves the warehouse as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

from ingestion_platform.core.sql_quoting import quote_identifier

# dlt's table of stored schema versions; a version it finds there is not migrated again.
_VERSIONS = "_dlt_version"


@dataclass(frozen=True)
class DatasetBefore:
    """What `dataset` held before dlt's schema step: its tables, the landing table's columns
    and the schema versions dlt had stored (under the lock, only this landing's step adds any)."""

    dataset: str
    table: str
    dataset_existed: bool
    tables: frozenset[str]
    columns: tuple[str, ...]
    versions: frozenset[str]

    @property
    def table_existed(self) -> bool:
        return self.table in self.tables


def dataset_before(
    connection: duckdb.DuckDBPyConnection, dataset: str, table: str
) -> DatasetBefore:
    """Note what `dataset` holds now, through a connection opened under the warehouse lock."""
    (schemas,) = connection.execute(
        "select count(*) from information_schema.schemata "
        "where catalog_name = current_database() and schema_name = ?",
        [dataset],
    ).fetchall()
    tables = _column(
        connection,
        "select table_name from information_schema.tables "
        "where table_catalog = current_database() and table_schema = ?",
        [dataset],
    )
    columns: list[str] = []
    if table in tables:
        columns = _column(
            connection,
            "select column_name from information_schema.columns "
            "where table_catalog = current_database() and table_schema = ? "
            "and table_name = ? order by ordinal_position",
            [dataset, table],
        )
    versions: list[str] = []
    if _VERSIONS in tables:
        relation = f"{quote_identifier(dataset)}.{_VERSIONS}"
        versions = _column(connection, f"select version_hash from {relation}")  # noqa: S608
    return DatasetBefore(
        dataset=dataset,
        table=table,
        dataset_existed=bool(schemas[0]),
        tables=frozenset(tables),
        columns=tuple(columns),
        versions=frozenset(versions),
    )


def _column(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: list[object] | None = None
) -> list[str]:
    return [value for (value,) in connection.execute(sql, parameters or []).fetchall()]


@contextmanager
def undone_on_failure(
    connection: duckdb.DuckDBPyConnection, before: DatasetBefore | None
) -> Iterator[None]:
    """Restore the dataset as `before` noted it if the body fails (None: nothing to undo)."""
    try:
        yield
    except BaseException as error:
        if before is not None:
            try:
                restore_dataset(connection, before)
            except Exception as undo_error:  # the landing's own error is the one to report
                error.add_note(
                    f"The warehouse could not be put back as it was ({undo_error}); "
                    f"tables or columns dlt created in {before.dataset!r} may remain empty"
                )
        raise


def restore_dataset(connection: duckdb.DuckDBPyConnection, before: DatasetBefore) -> None:
    """Put `before.dataset` back as it was: drop what dlt's step created, in one transaction.

    Only what dlt's schema step adds is undone (tables, the landing table's new columns,
    stored schema versions); rows were never written, the slice's own transaction rolled back.
    """
    now = dataset_before(connection, before.dataset, before.table)
    schema = quote_identifier(before.dataset)
    statements: list[tuple[str, list[object]]] = []
    for name in sorted(now.tables - before.tables):
        statements.append((f"drop table {schema}.{quote_identifier(name)}", []))
    if before.table_existed:
        for column in now.columns:
            if column not in before.columns:
                relation = f"{schema}.{quote_identifier(before.table)}"
                statements.append(
                    (f"alter table {relation} drop column {quote_identifier(column)}", [])
                )
    if _VERSIONS in before.tables and now.versions - before.versions:
        statements.append(
            (
                f"delete from {schema}.{_VERSIONS} where list_contains(?, version_hash)",  # noqa: S608
                [sorted(now.versions - before.versions)],
            )
        )
    if now.dataset_existed and not before.dataset_existed:
        statements.append((f"drop schema {schema}", []))
    if not statements:
        return
    connection.execute("begin")
    try:
        for sql, parameters in statements:
            connection.execute(sql, parameters)
        connection.execute("commit")
    except BaseException:
        connection.execute("rollback")
        raise
