"""Land one slice of a stream into DuckDB: rows and bad records, in one transaction.

The decoded slice (sources/kinesis/connectors/decode.py) arrives as Arrow with each row's JSON
text. DuckDB validates and types it in C++: `json_group_structure` infers the slice's
columns, `json_transform` turns every row into them. Then one transaction adds new
columns (widening a column whose values changed type), deletes the slice's rows and
quarantined records, inserts both again, and runs the caller's bookkeeping (the stream
manifest marks the partition landed). The columns are inferred and invalid records found
in a private in-memory DuckDB before the warehouse is locked: the lock covers the
transaction, not the slice's analysis. A failed or killed run leaves every table as it was;
a re-run gives identical rows, because the slice is exact and keyed by `_batch_key`.

Bad records share the files' quarantine shape (sources/files/landing.py): the `file` column holds
the location `shardId-…:<sequence number>`, since a stream has no files or lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.core.column_names import (
    clashing_names,
    describe_clash,
    describe_taken,
    taken_names,
    warehouse_name,
)
from ingestion_platform.core.duckdb_results import fetch_row
from ingestion_platform.core.json_fit import INTEGERS, misfit, misfit_reason
from ingestion_platform.core.quarantine import QUARANTINE_TABLE, ensure_quarantine
from ingestion_platform.core.sql_quoting import quote_literal
from ingestion_platform.core.warehouse import (
    BATCH_KEY_COLUMN,
    LOADED_AT_COLUMN,
    Warehouse,
    delete_slices,
    quote_identifier,
)
from ingestion_platform.sources.kinesis.connectors.decode import BadRecord, Decoded, Decoding
from ingestion_platform.sources.kinesis.connectors.schema import VALID_OBJECT, infer_structure

ORIGIN_COLUMNS = [
    "_shard_id",
    "_sequence_number",
    "_sub_sequence",
    "_partition_key",
    "_approximate_arrival",
]
# The columns every stream landing writes itself: a record's key may not land as one.
_OWN_COLUMNS = (*ORIGIN_COLUMNS, BATCH_KEY_COLUMN, LOADED_AT_COLUMN)

InTransaction = Callable[[duckdb.DuckDBPyConnection], None]


@dataclass(frozen=True)
class MessageDecoding:
    """How a queue source turns messages into rows: its declared decoding, limit and types."""

    decoding: Decoding
    max_record_bytes: int
    column_types: dict[str, str]


@dataclass
class StreamLandingReport:
    """What one stream landing did; records read = rows landed + records quarantined."""

    records_read: int
    bytes_read: int
    rows_landed: int = 0
    rows_quarantined: int = 0
    new_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    oldest_arrival: datetime | None = None


def land_stream_slice(
    *,
    warehouse: Warehouse,
    dataset: str,
    table: str,
    batch_key: str,
    decoded: Decoded,
    decoding: Decoding,
    column_types: dict[str, str],
    in_transaction: InTransaction | None = None,
) -> StreamLandingReport:
    """Replace the rows and quarantined records of `batch_key` with `decoded`."""
    warehouse.check_dataset(dataset)
    started = time.monotonic()
    report = StreamLandingReport(decoded.records_read, decoded.bytes_read)
    loaded_at = datetime.now(UTC)
    schema = quote_identifier(dataset)
    relation = f"{schema}.{quote_identifier(table)}"
    bad = list(decoded.bad)
    inferred: dict[str, Any] = {}
    if decoding != "raw":
        staging = duckdb.connect(config={"memory_limit": warehouse.memory_limit})
        try:
            staging.register("slice_rows", decoded.rows)
            bad += _invalid_json(staging)
            inferred = infer_structure(staging, decoded.rows)
            refused = _refused_keys(inferred)
            if refused:
                clashing, rows = _split_refused(staging, refused)
                bad += clashing
                decoded = replace(decoded, rows=rows)
                staging.register("slice_rows", rows)
                inferred = infer_structure(staging, rows)  # without the quarantined keys
            structure, names = _structure(inferred, column_types)
            declared = {key for key, name in names.items() if name in column_types}
            misfits = _misfits(staging, structure, declared)
            if misfits:
                bad += misfits
                decoded = replace(decoded, rows=_without(staging, misfits))
        finally:
            staging.close()
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        try:
            connection.execute("begin")
            connection.execute(f"create schema if not exists {schema}")
            quarantine = ensure_quarantine(connection, dataset)
            connection.register("slice_rows", decoded.rows)
            if decoding == "raw":
                select = "select payload as data, * exclude (payload) from slice_rows"
                report.new_columns = _create_raw(connection, relation, select)
            else:
                select, report.new_columns = _evolve(
                    connection, dataset, table, relation, inferred, column_types
                )
            delete_slices(connection, dataset, [table, QUARANTINE_TABLE], [batch_key])
            stamp = f"$1 as {quote_identifier(BATCH_KEY_COLUMN)}, $2::timestamptz as " + (
                quote_identifier(LOADED_AT_COLUMN)
            )
            (report.rows_landed,) = fetch_row(
                connection,
                f"insert into {relation} by name select *, {stamp} from ({select})",  # noqa: S608
                [batch_key, loaded_at],
            )  # type: ignore[misc]
            report.rows_quarantined = _quarantine(
                connection, quarantine, dataset, batch_key, loaded_at, bad
            )
            if in_transaction is not None:
                in_transaction(connection)
            report.columns = {
                name: kind
                for name, kind, *_ in connection.execute(f"describe {relation}").fetchall()
            }
            connection.execute("commit")
        finally:
            connection.close()
    # In Arrow: a Python datetime per row cost a second at 200,000 rows.
    report.oldest_arrival = pc.min(decoded.rows.column("_approximate_arrival")).as_py()
    report.duration_seconds = time.monotonic() - started
    return report


def _invalid_json(connection: duckdb.DuckDBPyConnection) -> list[BadRecord]:
    """Rows whose text is not a JSON object, with Python's account of what is wrong."""
    rows = connection.execute(
        "select _shard_id, _sequence_number, _sub_sequence, payload from slice_rows "  # noqa: S608
        f"where not ({VALID_OBJECT})"
    ).fetchall()
    return [
        BadRecord(shard, sequence, sub, _json_problem(payload), payload[:4096])
        for shard, sequence, sub, payload in rows
    ]


def _refused_keys(inferred: dict[str, Any]) -> list[tuple[list[str], int, str]]:
    """Keys a record may not hold together, as (keys, how many it may hold, why): two that
    would land as one column (`userId`, `user_id`), or one the platform writes itself."""
    refused = [
        (keys, 1, f"keys {describe_clash({column: keys})}, so one of their values would be lost")
        for column, keys in clashing_names(inferred).items()
    ]
    refused += [
        ([key], 0, f"key {describe_taken({key: column})}; rename it at the producer")
        for key, column in taken_names(inferred, _OWN_COLUMNS).items()
    ]
    return refused


def _split_refused(
    connection: duckdb.DuckDBPyConnection, refused: list[tuple[list[str], int, str]]
) -> tuple[list[BadRecord], pa.Table]:
    """The records holding refused keys, as bad records, and the slice without them; a
    record holding one of two clashing keys lands it in their column."""
    bad: dict[tuple[str, str, int], BadRecord] = {}
    for keys, allowed, reason in refused:
        found = connection.execute(
            "select _shard_id, _sequence_number, _sub_sequence, payload from slice_rows "  # noqa: S608
            f"where {_holds_more_than('$1', allowed)}",
            [keys],
        ).fetchall()
        for shard, sequence, sub, payload in found:
            where = (shard, sequence, sub)
            bad.setdefault(where, BadRecord(*where, reason, payload[:4096]))
    kept = " and ".join(
        f"not {_holds_more_than(f'${index + 1}', allowed)}"
        for index, (_, allowed, _) in enumerate(refused)
    )
    rows = connection.execute(
        f"select * from slice_rows where {kept}",  # noqa: S608
        [keys for keys, _, _ in refused],
    ).arrow()
    return list(bad.values()), rows.read_all() if isinstance(rows, pa.RecordBatchReader) else rows


def _holds_more_than(keys: str, allowed: int) -> str:
    """Whether a row's JSON object holds more than `allowed` of the keys in parameter `keys`."""
    return (
        f"(case when {VALID_OBJECT} then "
        f"len(list_intersect(json_keys(payload), {keys}::varchar[])) > {allowed} else false end)"
    )


def _json_problem(text: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    return f"not a JSON object: a JSON {type(value).__name__}"


def _misfits(
    connection: duckdb.DuckDBPyConnection, structure: dict[str, Any], declared: set[str]
) -> list[BadRecord]:
    """The records with a value their column's type cannot hold, which json_transform would
    land as NULL, as bad records naming the key, the value and the type.

    Inferred types hold every value of the slice but one: JSON's non-negative integers infer
    as unsigned and land as BIGINT (a later slice may hold negatives), which 2^63 and above
    do not fit; such a number has 19 digits or more, so only records holding such a run of
    digits are converted (3.5 µs a record when every record is). Declared types may refuse
    any value: every record is checked against them. DuckDB may project before it filters,
    so only JSON objects (`j`) reach json_transform.
    """
    checked = {
        key: kind
        for key, kind in structure.items()
        if isinstance(kind, str) and (key in declared or kind.upper() in INTEGERS)
    }
    checks = [(misfit(key, kind), misfit_reason(key, kind)) for key, kind in checked.items()]
    if not checks:
        return []
    typed = quote_literal(json.dumps(checked))
    raw = quote_literal(json.dumps(dict.fromkeys(checked, "JSON")))
    candidates = VALID_OBJECT
    if not declared & checked.keys():
        candidates = f"regexp_matches(payload, '[0-9]{{19}}') and {VALID_OBJECT}"
    any_bad = " or ".join(check for check, _ in checks)
    reasons = ", ".join(f"case when {check} then {reason} end" for check, reason in checks)
    found = connection.execute(
        f"select _shard_id, _sequence_number, _sub_sequence, payload, "  # noqa: S608
        f"concat_ws('; ', {reasons}) from (select *, json_transform(j, {typed}) as s, "
        f"json_transform(j, {raw}) as r from (select *, case when {candidates} then payload "
        "end as j from slice_rows)) "
        f"where {any_bad}"
    ).fetchall()
    return [
        BadRecord(shard, sequence, sub, reason, payload[:4096])
        for shard, sequence, sub, payload, reason in found
    ]


def _without(connection: duckdb.DuckDBPyConnection, bad: list[BadRecord]) -> pa.Table:
    """The slice without the records `bad` names."""
    places = pa.table(
        {
            "_shard_id": [record.shard_id for record in bad],
            "_sequence_number": [record.sequence for record in bad],
            "_sub_sequence": [record.sub_sequence for record in bad],
        }
    )
    connection.register("bad_places", places)
    try:
        reader = connection.execute(
            "select slice_rows.* from slice_rows anti join bad_places as b "
            "on slice_rows._shard_id = b._shard_id "
            "and slice_rows._sequence_number = b._sequence_number "
            "and slice_rows._sub_sequence is not distinct from b._sub_sequence"
        ).arrow()
        # Read before the registration goes: the reader is lazy.
        return reader.read_all() if isinstance(reader, pa.RecordBatchReader) else reader
    finally:
        connection.unregister("bad_places")


def _structure(
    inferred: dict[str, Any], column_types: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each JSON key's DuckDB type (a declared type wins) and its warehouse column name."""
    structure = dict(inferred)
    names = {key: warehouse_name(key) for key in structure}
    for key, kind in column_types.items():
        for source_key in [k for k, name in names.items() if name == key] or [key]:
            structure[source_key] = kind
            names[source_key] = key
    return structure, names


def _typed_select(inferred: dict[str, Any], column_types: dict[str, str]) -> str:
    """A query over `slice_rows` giving the origin columns and one column per JSON key."""
    structure, names = _structure(inferred, column_types)
    origin = ", ".join(quote_identifier(name) for name in ORIGIN_COLUMNS)
    if not structure:
        return f"select {origin} from slice_rows where {VALID_OBJECT}"  # noqa: S608
    # Keys landing as one column (`userId`, `user_id`): a record holds at most one of them
    # (_split_refused quarantined the others), so the column takes whichever it holds.
    by_name: dict[str, list[str]] = {}
    for key, name in names.items():
        by_name.setdefault(name, []).append(f"_row.{quote_identifier(key)}")
    fields = ", ".join(
        f"{_first_of(keys)} as {quote_identifier(name)}" for name, keys in by_name.items()
    )
    transform = f"json_transform(payload, {quote_literal(json.dumps(structure))})"
    return (
        f"select {origin}, {fields} from (select {origin}, {transform} as _row "  # noqa: S608
        f"from slice_rows where {VALID_OBJECT})"
    )


def _first_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"


def _evolve(
    connection: duckdb.DuckDBPyConnection,
    dataset: str,
    table: str,
    relation: str,
    inferred: dict[str, Any],
    column_types: dict[str, str],
) -> tuple[str, list[str]]:
    """The slice's query, after creating the table or adding and widening its columns.

    A column whose values change type is widened: BIGINT to DOUBLE, anything else to JSON
    (old values converted with to_json, new ones read as JSON). Returns the query and the
    columns added.
    """
    existing = {
        name: kind
        for name, kind in connection.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [dataset, table],
        ).fetchall()
    }
    select = _typed_select(inferred, column_types)
    incoming = _describe(connection, select)
    if not existing:
        listed = ", ".join(f"{quote_identifier(n)} {k}" for n, k in incoming.items())
        connection.execute(f"create table {relation} ({listed})")
        return select, []
    as_json: set[str] = set()
    for name, kind in incoming.items():
        old = existing.get(name)
        if old is None or old == kind or (old, kind) == ("DOUBLE", "BIGINT") or old == "VARCHAR":
            continue  # new, the same, or a cast DuckDB does without loss
        column = quote_identifier(name)
        if (old, kind) == ("BIGINT", "DOUBLE"):
            connection.execute(f"alter table {relation} alter column {column} type DOUBLE")
            continue
        if old != "JSON":
            connection.execute(
                f"alter table {relation} alter column {column} type JSON using to_json({column})"
            )
        if kind != "JSON":
            as_json.add(name)
    if as_json:
        select = _typed_select(inferred, {**{n: "JSON" for n in as_json}, **column_types})
        incoming = _describe(connection, select)
    added = [name for name in incoming if name not in existing]
    for name in added:
        connection.execute(
            f"alter table {relation} add column {quote_identifier(name)} {incoming[name]}"
        )
    return select, added


def _create_raw(connection: duckdb.DuckDBPyConnection, relation: str, select: str) -> list[str]:
    listed = ", ".join(
        f"{quote_identifier(n)} {k}" for n, k in _describe(connection, select).items()
    )
    connection.execute(f"create table if not exists {relation} ({listed})")
    return []


def _describe(connection: duckdb.DuckDBPyConnection, select: str) -> dict[str, str]:
    columns = {
        name: kind
        for name, kind, *_ in connection.execute(f"describe {select}").fetchall()  # noqa: S608
    }
    return {**columns, BATCH_KEY_COLUMN: "VARCHAR", LOADED_AT_COLUMN: "TIMESTAMP WITH TIME ZONE"}


def _quarantine(
    connection: duckdb.DuckDBPyConnection,
    quarantine: str,
    dataset: str,
    batch_key: str,
    loaded_at: datetime,
    bad: list[BadRecord],
) -> int:
    if not bad:
        return 0
    rows = pa.table(
        {
            "source": [dataset] * len(bad),
            "file": [item.location for item in bad],
            "reason": [item.reason for item in bad],
            "raw_value": [item.raw_value for item in bad],
        }
    )
    connection.register("bad_rows", rows)
    connection.execute(
        f"insert into {quarantine} (source, file, reason, raw_value, _batch_key, _loaded_at) "  # noqa: S608
        "select source, file, reason, raw_value, $1, $2::timestamptz from bad_rows",
        [batch_key, loaded_at],
    )
    connection.unregister("bad_rows")
    return len(bad)
