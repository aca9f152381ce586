"""Whether a JSON value fits the column type it is converted to, in DuckDB SQL.

`json_transform` turns a value its target type cannot hold into NULL, without a word: a
number past BIGINT's range, text in a numeric column, a fraction rounded into an integer.
Over a row converted twice, once as `s` (each key to its column type) and once as `r` (each
key as JSON text), these expressions find such values, so the record is quarantined with
the reason instead of landing a NULL. Used by JSON Lines files and by stream records.
"""

from __future__ import annotations

from ingestion_platform.core.sql_quoting import quote_identifier, quote_literal

INTEGERS = {
    f"{sign}{size}INT" for sign in ("", "U") for size in ("TINY", "SMALL", "", "BIG", "HUGE")
}


def misfit(name: str, kind: str) -> str:
    """A value present under key `name` that its column's type `kind` cannot hold: the
    conversion gave NULL, or a fractional number would be rounded into an integer column."""
    if kind.upper() == "JSON":
        return "false"
    s, r = f"s.{quote_identifier(name)}", f"r.{quote_identifier(name)}"
    bad = f"({r} is not null and {s} is null)"
    if kind.upper() in INTEGERS:
        bad = f"({bad} or (json_type({r}) = 'DOUBLE' and try_cast({r} as double) <> {s}))"
    return f"coalesce({bad}, false)"  # never NULL: a NULL would drop the row from both sides


def misfit_reason(name: str, kind: str) -> str:
    """The quarantine reason for a misfit: the key, the value (up to 200 characters), the type."""
    value = f"left(r.{quote_identifier(name)}::varchar, 200)"
    return f"{quote_literal(name + ': ')} || {value} || {quote_literal(' does not fit ' + kind)}"
