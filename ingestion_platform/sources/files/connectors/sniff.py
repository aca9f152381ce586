"""Plan each staged file before the landing: its format, columns and the text profile of
its values (column_types.py settles the types from it), or why it cannot be read.

Runs outside the warehouse's writer, on a private in-memory DuckDB. The reason a file cannot
be read names the remote file, never the staging path, and the setting that would read it
(`max_line_size`). A gzip file is checked whole first: DuckDB reads a truncated stream up to
where it stops without a word, and a cut transfer must never land part of a file.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib

import duckdb

from ingestion_platform.core.column_names import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    clashing_names,
    describe_clash,
    describe_taken,
    taken_names,
    without_case_clashes,
)
from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.sql_quoting import quote_literal as literal
from ingestion_platform.sources.files.connectors.column_types import (
    JSON_SCALARS,
    PROFILE_ROWS,
    profile_sql,
    split_profile,
)
from ingestion_platform.sources.files.connectors.formats import (
    IS_OBJECT,
    FileRead,
    FormatOptions,
    UnreadableFile,
    json_structure,
)
from ingestion_platform.sources.files.connectors.records import (
    count_records,
    has_records,
    open_staged,
)

# The columns every file landing writes itself.
FILE_COLUMNS = ("_file", "_row", BATCH_KEY_COLUMN, LOADED_AT_COLUMN)


def plan_read(
    connection: duckdb.DuckDBPyConnection, local: str, label: str, options: FormatOptions
) -> FileRead:
    """Sniff a staged file's columns; UnreadableFile if it cannot be read at all."""
    fmt = options.format_of(label)
    read = FileRead(local, label, fmt, {}, options)
    if local.endswith(".gz"):
        _check_gzip(local, label)
    if fmt != "parquet" and options.encoding.lower().replace("-", "") == "utf8":
        _check_utf16(local, label)
    if fmt == "jsonl" and _starts_an_array(local):
        read.local_path = _array_as_lines(connection, local, label)
    try:
        _sniff(connection, read)
    except duckdb.Error as error:
        raise UnreadableFile(unreadable_reason(error, read)) from None
    clashes = clashing_names(read.columns)
    if clashes:
        raise UnreadableFile(
            f"{label}: columns {describe_clash(clashes)} (the warehouse's snake_case names), "
            "so one of their values would be lost; rename one of them in the file"
        )
    taken = taken_names(read.columns, FILE_COLUMNS)
    if taken:
        raise UnreadableFile(
            f"{label}: column {describe_taken(taken)} (every landing writes "
            f"{', '.join(FILE_COLUMNS)}); rename it in the file"
        )
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


def _starts_an_array(local: str) -> bool:
    """Whether a JSON file is one array (`[{…}, {…}]`) rather than JSON Lines."""
    with open_staged(local) as stream:
        start = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"[")


def _array_as_lines(connection: duckdb.DuckDBPyConnection, local: str, label: str) -> str:
    """A JSON array's elements as JSON Lines beside the staged file (element N is line N,
    its `_row`). Each element keeps its text: whitespace newlines become spaces (a newline
    in a JSON value is always escaped), so no number is re-printed."""
    lines = f"{local}.lines"
    elements = (
        "select replace(replace(json, chr(13), ' '), chr(10), ' ') "  # noqa: S608
        f"from read_json_objects({literal(local)}, format='array')"
    )
    try:
        connection.execute(
            f"copy ({elements}) to {literal(lines)} "
            "(format csv, header false, quote '', escape '', delim '\x01')"
        )
    except duckdb.Error as error:
        reason = str(error).strip().splitlines()[0].replace(local, label)
        raise UnreadableFile(f"{label} is a JSON array that cannot be read: {reason}") from None
    return lines


def _check_utf16(local: str, label: str) -> None:
    """A UTF-16 file read as UTF-8 fails with a misleading parser error; name the encoding."""
    with open_staged(local) as stream:
        start = stream.read(2)
    if start in (b"\xff\xfe", b"\xfe\xff"):
        raise UnreadableFile(
            f"{label} is UTF-16 encoded (it starts with a UTF-16 byte order mark). Fix: set "
            "`encoding: utf-16` in the source's defs.yaml"
        )


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
            f"{options.line_options()}) where {IS_OBJECT}"
        )
        structure = fetch_row(
            connection,
            f"select json_group_structure(try_cast(line as json)) from ({lines})",  # noqa: S608
        )
        if structure is None or structure[0] is None:
            return
        typed = json.dumps(without_case_clashes(json.loads(str(structure[0]))))
        probe = f"select s.* from (select json_transform('{{}}', {literal(typed)}) as s)"  # noqa: S608
        described = connection.execute(f"describe {probe}").fetchall()
        read.columns = {name: kind for name, kind, *_ in described}
        scalars = [
            name
            for name, kind in read.columns.items()
            if kind in JSON_SCALARS and name not in options.declared
        ]
        if scalars:
            text = literal(json_structure(dict.fromkeys(scalars, "VARCHAR")))
            relation = (
                f"(select s.* from (select json_transform(line, {text}) as s "  # noqa: S608
                f"from ({lines}) limit {PROFILE_ROWS}))"
            )
            row = fetch_row(connection, profile_sql(relation, scalars))
            read.profile = split_profile(tuple(row or ()), scalars)
        return
    # Every value as text: the types are settled at landing from the values' profile.
    csv_options = options.csv_options(read.label)
    source = f"read_csv({path}, {csv_options}, ignore_errors=true, all_varchar=true)"
    if not connection.execute(f"select 1 from {source} limit 1").fetchall():  # noqa: S608
        if has_records(read.local_path, options.quote or None, options.header):
            # Every record failed to parse (ignore_errors skipped them all): a file in
            # another dialect, not an empty one.
            raise UnreadableFile(_none_readable(connection, read))
        return
    described = connection.execute(f"describe select * from {source}").fetchall()  # noqa: S608
    read.columns = {name: kind for name, kind, *_ in described}
    # A declared column's type is known: its values need no profile.
    profiled = [name for name in read.columns if name not in options.declared]
    if profiled:
        relation = f"(select * from {source} limit {PROFILE_ROWS})"  # noqa: S608
        row = fetch_row(connection, profile_sql(relation, profiled))
        read.profile = split_profile(tuple(row or ()), profiled)


def _none_readable(connection: duckdb.DuckDBPyConnection, read: FileRead) -> str:
    """Why no record of a CSV file could be read with the source's settings, and the fix."""
    options = read.options
    delimiter = options.delimiter_for(read.label)
    try:
        sniffed = fetch_row(
            connection,
            f"select delimiter from sniff_csv({literal(read.local_path)}, "  # noqa: S608
            f"encoding={literal(options.encoding)}, max_line_size={options.max_line_size})",
        )
    except duckdb.Error:
        sniffed = None
    found = sniffed[0] if sniffed else None
    if found and found != delimiter:
        return (
            f"{read.label}: none of its records could be read with delimiter {delimiter!r}; "
            f"the file looks {found!r}-separated. Fix: set `delimiter: {found!r}` in the "
            "source's defs.yaml"
        )
    return (
        f"{read.label}: none of its records could be read as CSV with delimiter "
        f"{delimiter!r}, quote {options.quote!r} and header {str(options.header).lower()}. "
        "Fix: set `delimiter`, `quote` and `header` in the source's defs.yaml to the file's"
    )
