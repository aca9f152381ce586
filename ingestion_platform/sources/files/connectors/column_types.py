"""One rule for a file column's type, whatever order the files arrive in.

A column declared in `columns:` has the declared type. Otherwise a column keeps the type
chosen by the first landing that had values for it: the type most of those values (in the
first PROFILE_ROWS rows of each file) cast to (the narrowest on a tie) among BIGINT, DOUBLE,
BOOLEAN, DATE and TIMESTAMPTZ, or VARCHAR when no type holds more than half of them. (A
column created with no value yet is VARCHAR until a landing brings values.) A value that
does not cast to its column's type goes to quarantine with its reason: a column is never
widened to text because of a few bad values, and CSV and JSON Lines give the same types
for the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import duckdb

from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.sql_quoting import quote_identifier as _ident

# Sniffed over the first rows of each file: enough for a majority, one pass over little data.
# DuckDB's own CSV sniffer samples as many. Each row costs ~10 µs (five casts of every value),
# so 100,000 rows took 1.0-1.6 s of every large file's landing (bench/README.md).
PROFILE_ROWS = 20_480
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
# (type, SQL test of one text value `{v}`), narrowest first. A number with a fraction casts to
# BIGINT rounded, a timestamp casts to DATE truncated: the tests keep both exact.
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("BIGINT", "try_cast({v} as bigint) = try_cast({v} as double)"),
    ("DOUBLE", "try_cast({v} as double) is not null"),
    ("BOOLEAN", "try_cast({v} as boolean) is not null"),
    ("DATE", "try_cast({v} as date) is not null and strlen(trim({v})) <= 10"),
    (TIMESTAMPTZ, "try_cast({v} as timestamptz) is not null"),
)
# JSON structure types that hold one scalar value, profiled like CSV text.
JSON_SCALARS = {"VARCHAR", "BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN", "NULL"}

Profile = list[int]  # values present, then how many cast to each candidate


def profile_sql(relation: str, columns: Iterable[str]) -> str:
    """One row: for each column, its non-NULL count then its count per candidate."""
    parts = []
    for name in columns:
        value = f"{_ident(name)}::varchar"
        parts.append(f"count({value})")
        parts += [f"count(*) filter (where {test.format(v=value)})" for _, test in CANDIDATES]
    return f"select {', '.join(parts)} from {relation}"  # noqa: S608


def split_profile(row: tuple, columns: list[str]) -> dict[str, Profile]:
    width = 1 + len(CANDIDATES)
    return {name: list(row[i * width : (i + 1) * width]) for i, name in enumerate(columns)}


def chosen_type(profile: Profile) -> str:
    """The candidate most values cast to (narrowest on a tie), if more than half do."""
    present, *fits = profile
    best = max(range(len(fits)), key=lambda i: (fits[i], -i)) if fits else 0
    if present and fits and fits[best] * 2 > present:
        return CANDIDATES[best][0]
    return "VARCHAR"


def landing_choices(reads: list, names: Mapping[str, str]) -> dict[str, str]:
    """Warehouse column → the type this landing's values choose (profiles summed over its
    files); only columns with at least one value."""
    totals: dict[str, Profile] = {}
    for read in reads:
        for name, counts in read.profile.items():
            column = names[name]
            total = totals.setdefault(column, [0] * len(counts))
            totals[column] = [a + b for a, b in zip(total, counts, strict=True)]
    return {column: chosen_type(total) for column, total in totals.items() if total[0]}


def settle_types(
    reads: list,
    names: Mapping[str, str],
    existing: Mapping[str, str],
    declared: Mapping[str, str],
) -> None:
    """Give every read's columns their one type: declared, else the table's, else the type
    the landing's values choose, else the file's own (VARCHAR for a column with no value)."""
    chosen = landing_choices(reads, names)
    for read in reads:
        settled = {}
        for name, own in read.columns.items():
            column = names[name]
            settled[name] = (
                declared.get(name)
                or declared.get(column)
                or existing.get(column)
                or chosen.get(column)
                or ("VARCHAR" if name in read.profile else own)
            )
        read.columns = settled


def canonical_types(
    connection: duckdb.DuckDBPyConnection, declared: Mapping[str, str]
) -> dict[str, str]:
    """Declared types as DuckDB names them (`TIMESTAMPTZ` → `TIMESTAMP WITH TIME ZONE`), so
    they compare with the table's; ValueError naming the column for a type DuckDB lacks."""
    named = {}
    for column, kind in declared.items():
        try:
            row = fetch_row(connection, f"select typeof(cast(null as {kind}))")  # noqa: S608
        except duckdb.Error:
            raise ValueError(f"{column}: {kind!r} is not a DuckDB type") from None
        named[column] = str(row[0]) if row else kind
    return named
