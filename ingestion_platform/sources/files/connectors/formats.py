"""Read staged files with DuckDB's own readers: CSV, JSON Lines, Parquet, gzip of the text ones.

DuckDB reads straight into the warehouse table inside the slice's transaction, which is as
fast as a plain `read_csv` into a table (bench/README.md); dlt's filesystem readers and
pyarrow's CSV reader were slower and cannot keep bad rows aside. Bad rows are what the
reader already reports: `store_rejects` for CSV (file, line, column, error, raw line);
for JSON Lines every line is read as text first, so a line that is not a JSON object is
quarantined with its line number while the others are parsed by `json_transform` with the
structure of all valid lines.

Files are planned first (sniff.py); column types follow one rule whatever
the order of arrival (column_types.py), settled by the landing before reading.

Every row gets `_file` and `_row`: its record number in the file (1 = first data record;
for JSON Lines the line number). A file with no data records yields no columns, so an
empty or header-only file lands 0 rows without typing the table's columns as text.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Literal

from ingestion_platform.core.json_fit import misfit, misfit_reason
from ingestion_platform.core.sql_quoting import quote_identifier as _ident
from ingestion_platform.core.sql_quoting import quote_literal as literal
from ingestion_platform.sources.files.connectors.column_types import Profile

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
IS_OBJECT = "json_type(try_cast(line as json)) = 'OBJECT'"
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
    delimiter: str | None = None  # None: "," (a tab for .tsv files)
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

    def delimiter_for(self, name: str) -> str:
        """The declared delimiter, else the one the file's extension says."""
        if self.delimiter is not None:
            return self.delimiter
        stem = name[:-3] if name.endswith(".gz") else name
        return "\t" if stem.lower().endswith(".tsv") else ","

    def csv_options(self, name: str) -> str:
        """read_csv's options for file `name` (its label: the extension may set the delimiter)."""
        return (
            f"header={str(self.header).lower()}, delim={literal(self.delimiter_for(name))}, "
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


def _struct(columns: tuple[tuple[str, str], ...] | dict[str, str]) -> str:
    pairs = columns.items() if isinstance(columns, dict) else columns
    return "{" + ", ".join(f"{literal(name)}: {literal(kind)}" for name, kind in pairs) + "}"


def select_rows(read: FileRead, names: dict[str, str], rejects: str, numbering: str) -> str:
    """A SELECT of the file's good rows, columns renamed to `names`, plus `_file` and `_row`.

    CSV rejects go to the temporary table `rejects` (DuckDB's store_rejects); `_row` of a CSV
    row is its position among good rows and is corrected for rejects by `csv_row_fix`. It comes
    from the sequence `numbering` (which must exist) over a serial scan: one thread reads the
    file in order, so each good row takes the next number. `row_number() over ()` gave the
    same numbers but took 3 s over 2M rows to the sequence's 1.5 s (bench/README.md).
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
        good = " and ".join(f"not {misfit(name, kind)}" for name, kind in read.columns.items())
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
        f"select {renamed}, {label} as _file, nextval({literal(numbering)}) as _row from "  # noqa: S608
        f"read_csv({path}, {options.csv_options(read.label)}, columns={columns}, "
        "auto_detect=false, "
        f"parallel=false, store_rejects=true, rejects_table={literal(rejects)}, "
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


def json_structure(columns: dict[str, str]) -> str:
    return json.dumps({name: kind for name, kind in columns.items()})


def _parsed_lines(read: FileRead) -> str:
    """The file's JSON object lines: `_row` (line number), the line, `s` with every column
    converted to its type, and `r` with every column's value as JSON text."""
    typed = literal(json_structure(read.columns))
    raw = literal(json_structure(dict.fromkeys(read.columns, "JSON")))
    # Filters may be evaluated after projections: only object lines reach json_transform.
    lines = (
        f"select line, row_number() over () as _row from read_csv({literal(read.local_path)}, "  # noqa: S608
        f"columns={{'line': 'VARCHAR'}}, {read.options.line_options()})"
    )
    return (
        f"select _row, line, json_transform(j, {typed}) as s, json_transform(j, {raw}) as r "  # noqa: S608
        f"from (select _row, line, case when {IS_OBJECT} then line end as j from ({lines})) "
        "where j is not null"
    )


def bad_rows(read: FileRead, rejects: str) -> str:
    """A SELECT of the file's bad rows: line, column(s), reason and raw value, one per row."""
    label = literal(read.label)
    if read.format == "csv":
        return (
            f"select {label} as file, line, string_agg(distinct column_name, ', ') as "  # noqa: S608
            f"column_name, string_agg(error_message || case error_type when "
            "'LINE SIZE OVER MAXIMUM' then '. Fix: raise max_line_size in the source''s "
            "defs.yaml' when 'INVALID ENCODING' then ' Fix: if the file is in another "
            "encoding, set `encoding:` in the source''s defs.yaml (e.g. latin-1)' "
            "else '' end, '; ') as reason, "
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
        checks = [(misfit(n, k), literal(n), misfit_reason(n, k)) for n, k in read.columns.items()]
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
