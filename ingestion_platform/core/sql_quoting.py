"""Quoting for SQL built from names and values in config, so they can never become SQL."""


def quote_identifier(name: str) -> str:
    """A DuckDB (and PostgreSQL) identifier: a table, column or schema name."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"
