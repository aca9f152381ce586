"""Read staged files with DuckDB's own readers: CSV, JSON Lines, Parquet, gzip of the text ones.

DuckDB reads straight into the warehouse table inside the slice's transaction, which is as
fast as a plain `read_csv` into a table (bench/README.md); dlt's filesystem readers and
pyarrow's CSV reader were slower and cannot keep bad rows aside. Bad rows are what the
reader already reports: `store_rejects` for CSV (file, line, column, error, raw line);
for JSON Lines every line is read as text first, so a line that is not a JSON object is
quarantined with its line number while the others are parsed by `json_transform` with the
structure of all valid lines.

Column types follow one rule whatever the order of arrival (connectors/file_types.py): the
sniff profiles each column's values as text, and the landing settles the types before reading.

Every row gets `_file` and `_row`: its record number in the file (1 = first data record;
for JSON Lines the line number). A file with no data records yields no columns, so an
empty or header-only file lands 0 rows without typing the table's columns as text.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import zlib
from dataclasses import dataclass, field
from typing import Literal

import duckdb

from ingestion_platform.connectors.duckdb_results import fetch_row
from ingestion_platform.connectors.file_records import count_records
from ingestion_platform.connectors.file_types import (
    JSON_SCALARS,
    PROFILE_ROWS,
    Profile,
    profile_sql,
    split_profile,
)
from ingestion_platform.connectors.sql_quoting import quote_identifier as _ident
from ingestion_platform.connectors.sql_quoting import quote_literal as literal

Format = Literal["csv", "jsonl", "parquet"]
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
_IS_OBJECT = "json_type(try_cast(line as json)) = 'OBJECT'"
_INTEGERS = {
    f"{sign}{size}INT" for sign in ("", "U") for size in ("TINY", "SMALL", "", "BIG", "HUGE")
}
_LINE_OPTIONS = "header=false, delim='\x01', quote='', escape='', auto_detect=false"
# DuckDB's own default is 2 MB, which one long text field in a real export passes.
DEFAULT_MAX_LINE_SIZE = 16 * 10**6


class UnreadableFile(ValueError):
    """A file the reader cannot read at all (wrong format, undecodable, truncated)."""


@dataclass(frozen=True)
class FormatOptions:
    """How files are read: the format (or `auto` by extension) and CSV's dialect."""

    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    header: bool = True
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    columns: tuple[tuple[str, str], ...] = ()  # explicit (header name, DuckDB type)
    max_line_size: int = DEFAULT_MAX_LINE_SIZE

    def format_of(self, name: str) -> Format:
        if self.format != "auto":
            return self.format
        stem = name[:-3] if name.endswith(".gz") else name
        suffix = posixpath.splitext(stem)[1].lower()
        if suffix not in _SUFFIXES:
            raise UnreadableFile(
                f"cannot tell the format of {name} from its extension; set `format:`"
            )
        return _SUFFIXES[suffix]

    def _csv_options(self) -> str:
        return (
            f"header={str(self.header).lower()}, delim={literal(self.delimiter)}, "
            f"quote={literal(self.quote)}, encoding={literal(self.encoding)}, "
            f"max_line_size={self.max_line_size}, buffer_size={self._buffer_size}"
        )

    @property
    def _buffer_size(self) -> int:
        # DuckDB's default buffer is 16 lines long: 256 MB per reader at 16 MB a line, over
        # the warehouse's memory limit; two lines are enough. Whole MiB: with an odd size
        # (32,000,001) DuckDB 1.5 silently dropped a row of a 36 MB file.
        mib = 1 << 20
        return -(-max(2 * self.max_line_size, 32 * mib) // mib) * mib

    def line_options(self) -> str:
        """Options that read a JSON Lines file as one text value per line."""
        return (
            f"{_LINE_OPTIONS}, max_line_size={self.max_line_size}, buffer_size={self._buffer_size}"
        )

    @property
    def declared(self) -> dict[str, str]:
        return dict(self.columns)


@dataclass
class FileRead:
    """A staged file, planned: its columns (source name → DuckDB type) and how to read it."""

    local_path: str
    label: str  # what `_file` holds: the path relative to the watched folder
    format: Format
    columns: dict[str, str]
    options: FormatOptions
    # Per column sniffed as text: values present and how many fit each candidate type.
    profile: dict[str, Profile] = field(default_factory=dict)
    # Parquet's own column types; a settled type that differs is read with try_cast.
    own_types: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.columns


def plan_read(
    connection: duckdb.DuckDBPyConnection, local: str, label: str, options: FormatOptions
) -> FileRead:
    """Sniff a staged file's columns; UnreadableFile if it cannot be read at all."""
    fmt = options.format_of(label)
    read = FileRead(local, label, fmt, {}, options)
    if local.endswith(".gz"):
        _check_gzip(local, label)
    try:
        _sniff(connection, read)
    except duckdb.Error as error:
        raise UnreadableFile(unreadable_reason(error, read)) from None
    return read


def _check_gzip(local: str, label: str) -> None:
    """DuckDB reads a truncated gzip stream up to where it stops, without a word: a cut
    transfer would land part of a file. Python's reader checks the end and the CRC."""
    try:
        with gzip.open(local, "rb") as stream:
            while stream.read(1 << 23):
                pass
    except (OSError, EOFError, zlib.error) as error:
        raise UnreadableFile(f"{label} is not a complete gzip file ({error})") from None


def unreadable_reason(error: BaseException, read: FileRead) -> str:
    """Why a file cannot be read, naming the remote file (never the staging path) and, when
    a setting would read it, that setting."""
    text = str(error)
    too_long = re.search(r"Maximum line size of (\d+) bytes exceeded\. Actual Size:(\d+)", text)
    if too_long:
        limit, actual = (int(n) for n in too_long.groups())
        wanted = -(-actual * 2 // 10**6)  # twice the line, in whole MB
        return (
            f"{read.label} has a line of {actual:,} bytes, longer than max_line_size "
            f"({limit:,} bytes). Fix: raise max_line_size in the source's defs.yaml, e.g. "
            f"max_line_size: {wanted}MB"
        )
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    reason = lines[0]
    if "CSV Error on Line" in reason and len(lines) > 2:  # the next line quotes the data
        reason = f"{reason}: {lines[2]}"
    return reason.replace(read.local_path, read.label)


def plan_reads(
    staged: list[tuple[str, str]], options: FormatOptions
) -> tuple[list[FileRead], dict[str, str]]:
    """Plan every staged (local path, label) file: the readable ones, and why the others
    cannot be read (by label)."""
    reads: list[FileRead] = []
    unreadable: dict[str, str] = {}
    with duckdb.connect() as sniffer:
        for local, label in staged:
            try:
                reads.append(plan_read(sniffer, local, label, options))
            except UnreadableFile as error:
                unreadable[label] = str(error)
    return reads, unreadable


def unread_rows(local: str, label: str, options: FormatOptions) -> int:
    """What a file quarantined whole counts as: its records, as far as they can be told."""
    try:
        fmt = options.format_of(label)
    except UnreadableFile:
        fmt = "csv"
    if fmt == "parquet":
        return 1
    quote = options.quote or None if fmt == "csv" else None
    return count_records(local, quote, options.header and fmt == "csv")


def _sniff(connection: duckdb.DuckDBPyConnection, read: FileRead) -> None:
    """Fill `read.columns` (and the text profile of its scalar columns); none when empty."""
    path, options = literal(read.local_path), read.options
    if read.format == "parquet":
        source = f"read_parquet({path})"
        if connection.execute(f"select 1 from {source} limit 1").fetchall():  # noqa: S608
            described = connection.execute(f"describe select * from {source}").fetchall()  # noqa: S608
            read.columns = {name: kind for name, kind, *_ in described}
            read.own_types = dict(read.columns)
        return
    if read.format == "jsonl":
        lines = (
            f"select line from read_csv({path}, columns={{'line': 'VARCHAR'}}, "  # noqa: S608
            f"{options.line_options()}) where {_IS_OBJECT}"
        )
        structure = fetch_row(
            connection,
            f"select json_group_structure(try_cast(line as json)) from ({lines})",  # noqa: S608
        )
        if structure is None or structure[0] is None:
            return
        probe = (
            f"select s.* from (select json_transform('{{}}', {literal(str(structure[0]))}) as s)"  # noqa: S608
        )
        described = connection.execute(f"describe {probe}").fetchall()
        read.columns = {name: kind for name, kind, *_ in described}
        scalars = [name for name, kind in read.columns.items() if kind in JSON_SCALARS]
        if scalars:
            text = literal(_json_structure(dict.fromkeys(scalars, "VARCHAR")))
            relation = (
                f"(select s.* from (select json_transform(line, {text}) as s "  # noqa: S608
                f"from ({lines}) limit {PROFILE_ROWS}))"
            )
            row = fetch_row(connection, profile_sql(relation, scalars))
            read.profile = split_profile(tuple(row or ()), scalars)
        return
    # Every value as text: the types are settled at landing from the values' profile.
    source = f"read_csv({path}, {options._csv_options()}, ignore_errors=true, all_varchar=true)"
    if not connection.execute(f"select 1 from {source} limit 1").fetchall():  # noqa: S608
        return
    described = connection.execute(f"describe select * from {source}").fetchall()  # noqa: S608
    read.columns = {name: kind for name, kind, *_ in described}
    relation = f"(select * from {source} limit {PROFILE_ROWS})"  # noqa: S608
    row = fetch_row(connection, profile_sql(relation, list(read.columns)))
    read.profile = split_profile(tuple(row or ()), list(read.columns))


def _struct(columns: tuple[tuple[str, str], ...] | dict[str, str]) -> str:
    pairs = columns.items() if isinstance(columns, dict) else columns
    return "{" + ", ".join(f"{literal(name)}: {literal(kind)}" for name, kind in pairs) + "}"


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0]


def select_rows(read: FileRead, names: dict[str, str], rejects: str) -> str:
    """A SELECT of the file's good rows, columns renamed to `names`, plus `_file` and `_row`.

    CSV rejects go to the temporary table `rejects` (DuckDB's store_rejects); `_row` of a CSV
    row is its position among good rows and is corrected for rejects by `fix_rows`.
    """
    path = literal(read.local_path)
    renamed = ", ".join(f"{_ident(source)} as {_ident(names[source])}" for source in read.columns)
    label = literal(read.label)
    if read.format == "parquet":
        typed = ", ".join(
            f"{_parquet_value(read, source)} as {_ident(names[source])}" for source in read.columns
        )
        return (
            f"select {typed}, {label} as _file, _row from ({_parquet_rows(read)}) "  # noqa: S608
            f"where not ({_parquet_any_bad(read)})"
        )
    if read.format == "jsonl":
        good = " and ".join(f"not {_bad_value(name, kind)}" for name, kind in read.columns.items())
        selected = ", ".join(
            f"s.{_ident(source)} as {_ident(names[source])}" for source in read.columns
        )
        return (
            f"select {selected}, {label} as _file, _row from ({_parsed_lines(read)}) "  # noqa: S608
            f"where {good}"
        )
    options = read.options
    columns = _struct(tuple(read.columns.items()))  # in file order, as sniffed
    return (
        f"select {renamed}, {label} as _file, row_number() over () as _row from "  # noqa: S608
        f"read_csv({path}, {options._csv_options()}, columns={columns}, auto_detect=false, "
        f"store_rejects=true, rejects_table={literal(rejects)}, "
        f"rejects_scan={literal(rejects + '_scan')})"
    )


def _parquet_rows(read: FileRead) -> str:
    return (
        f"select *, file_row_number + 1 as _row from "  # noqa: S608
        f"read_parquet({literal(read.local_path)}, file_row_number=true)"
    )


def _parquet_value(read: FileRead, name: str) -> str:
    kind = read.columns[name]
    if read.own_types.get(name) == kind:
        return _ident(name)
    return f"try_cast({_ident(name)} as {kind})"


def _parquet_bad(read: FileRead, name: str) -> str:
    """A value present that the settled type (declared, or the table's) cannot hold."""
    if read.own_types.get(name) == read.columns[name]:
        return "false"
    return f"({_ident(name)} is not null and {_parquet_value(read, name)} is null)"


def _parquet_any_bad(read: FileRead) -> str:
    return " or ".join(_parquet_bad(read, name) for name in read.columns) or "false"


def _json_structure(columns: dict[str, str]) -> str:
    return json.dumps({name: kind for name, kind in columns.items()})


def _parsed_lines(read: FileRead) -> str:
    """The file's JSON object lines: `_row` (line number), the line, `s` with every column
    converted to its type, and `r` with every column's value as JSON text."""
    typed = literal(_json_structure(read.columns))
    raw = literal(_json_structure(dict.fromkeys(read.columns, "JSON")))
    # Filters may be evaluated after projections: only object lines reach json_transform.
    lines = (
        f"select line, row_number() over () as _row from read_csv({literal(read.local_path)}, "  # noqa: S608
        f"columns={{'line': 'VARCHAR'}}, {read.options.line_options()})"
    )
    return (
        f"select _row, line, json_transform(j, {typed}) as s, json_transform(j, {raw}) as r "  # noqa: S608
        f"from (select _row, line, case when {_IS_OBJECT} then line end as j from ({lines})) "
        "where j is not null"
    )


def _bad_value(name: str, kind: str) -> str:
    """A value present in the line that its column's type cannot hold: the conversion gave
    NULL, or a fractional number would be rounded into an integer column."""
    if kind.upper() == "JSON":
        return "false"
    s, r = f"s.{_ident(name)}", f"r.{_ident(name)}"
    bad = f"({r} is not null and {s} is null)"
    if kind.upper() in _INTEGERS:
        bad = f"({bad} or (json_type({r}) = 'DOUBLE' and try_cast({r} as double) <> {s}))"
    return f"coalesce({bad}, false)"  # never NULL: a NULL would drop the line from both sides


def _reason(name: str, kind: str) -> str:
    value = f"left(r.{_ident(name)}::varchar, 200)"
    return f"{literal(name + ': ')} || {value} || {literal(' does not fit ' + kind)}"


def bad_rows(read: FileRead, rejects: str) -> str:
    """A SELECT of the file's bad rows: line, column(s), reason and raw value, one per row."""
    label = literal(read.label)
    if read.format == "csv":
        return (
            f"select {label} as file, line, string_agg(distinct column_name, ', ') as "  # noqa: S608
            f"column_name, string_agg(error_message || case when error_type = "
            "'LINE SIZE OVER MAXIMUM' then '. Fix: raise max_line_size in the source''s "
            "defs.yaml' else '' end, '; ') as reason, "
            f"any_value(csv_line) as raw_value from {_ident(rejects)} group by line"
        )
    if read.format == "jsonl":
        path = literal(read.local_path)
        not_objects = (
            f"select {label} as file, _row as line, null as column_name, "  # noqa: S608
            "case when json_valid(line) then 'a JSON value that is not an object' "
            "else 'not valid JSON' end as reason, line as raw_value from (select line, "
            f"row_number() over () as _row from read_csv({path}, columns={{'line': 'VARCHAR'}}, "
            f"{read.options.line_options()})) where line is not null and trim(line) <> '' and "
            "coalesce(json_type(try_cast(line as json)), '') <> 'OBJECT'"
        )
        if read.empty:
            return not_objects
        checks = [(_bad_value(n, k), literal(n), _reason(n, k)) for n, k in read.columns.items()]
        columns = ", ".join(f"case when {bad} then {name} end" for bad, name, _ in checks)
        reasons = ", ".join(f"case when {bad} then {reason} end" for bad, _, reason in checks)
        any_bad = " or ".join(bad for bad, _, _ in checks)
        return (
            f"{not_objects} union all select {label} as file, _row as line, "  # noqa: S608
            f"concat_ws(', ', {columns}) as column_name, concat_ws('; ', {reasons}) as reason, "
            f"line as raw_value from ({_parsed_lines(read)}) where {any_bad}"
        )
    checks = [
        (_parquet_bad(read, n), literal(n), _parquet_reason(read, n))
        for n in read.columns
        if _parquet_bad(read, n) != "false"
    ]
    if not checks:
        return f"select {label} as file, 0 as line, null as column_name, null as reason, null as raw_value where false"  # noqa: S608,E501
    columns = ", ".join(f"case when {bad} then {name} end" for bad, name, _ in checks)
    reasons = ", ".join(f"case when {bad} then {reason} end" for bad, _, reason in checks)
    raw = ", ".join(f"{literal(n + '=')} || {_ident(n)}::varchar" for n in read.columns)
    return (
        f"select {label} as file, _row as line, concat_ws(', ', {columns}) as column_name, "  # noqa: S608
        f"concat_ws('; ', {reasons}) as reason, concat_ws(', ', {raw}) as raw_value "
        f"from ({_parquet_rows(read)}) where {_parquet_any_bad(read)}"
    )


def _parquet_reason(read: FileRead, name: str) -> str:
    value = f"left({_ident(name)}::varchar, 200)"
    return f"{literal(name + ': ')} || {value} || {literal(' does not fit ' + read.columns[name])}"


def csv_row_fix(relation: str, rejects: str, label: str, batch_key: str, header: bool) -> str:
    """An UPDATE that turns `_row` (position among good rows) into the record number in file.

    A good row's record number is its position plus the rejected records before it; a reject
    on line L is record L - 1 with a header. Runs only when the file had rejects.
    """
    offset = 1 if header else 0
    return (
        f"update {relation} set _row = _row + (select count(*) from (select line - {offset} "  # noqa: S608
        f"- row_number() over (order by line) as good_before from (select distinct line from "
        f"{_ident(rejects)})) r where r.good_before < {relation}._row) "
        f"where _file = {literal(label)} and _batch_key = {literal(batch_key)}"
    )
