"""Nothing is lost: every bad value and bad record is in `<source>._quarantine`, exactly."""

from __future__ import annotations

import functools
import os
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import LocalFileSource
from ingestion_platform_tests.files_helpers import keys, local_source, rows, tick
from ingestion_platform_tests.sources import build_source, failure_message, materialize

# Files here are whole once written: taken at once unless a test sets `settle`.
_defs = functools.partial(local_source, settle="0s")


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    event = result.get_asset_materialization_events()[0]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def _quarantine(warehouse: Warehouse) -> list[tuple]:
    return rows(
        warehouse,
        "select file, line, column_name, reason, raw_value from inbox._quarantine "
        "order by file, line",
    )


def test_json_values_that_do_not_fit_the_column_type_are_quarantined_not_nulled(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.jsonl").write_text('{"id": 1, "amount": 1.5, "n": 3}\n')
    defs = _defs(tmp_path, inbox)
    (first,) = keys(tick(defs, instance))
    materialize(defs, partition_key=first, resources=resources, instance=instance)
    assert rows(warehouse, "select data_type from information_schema.columns where "
                "table_name = 'orders' and column_name in ('id', 'amount', 'n') "
                "order by column_name") == [("DOUBLE",), ("BIGINT",), ("BIGINT",)]  # fmt: skip

    (inbox / "b.jsonl").write_text(
        '{"id": 2, "amount": "oops", "n": 2.7}\n'
        '{"id": 3, "amount": 2, "n": 4}\n'
        "not json\n"
        '{"id": "x", "amount": null}\n'
        '{"id": 5, "amount": "2.5", "n": 7.0}\n'
        '{"id": 6, "extra": "new"}\n'
    )
    (inbox / "c.jsonl").write_text("garbage\n[1, 2]\n\n")  # no object at all: still kept
    os.utime(inbox / "c.jsonl", (2_000_000_000, 2_000_000_000))
    more = _defs(tmp_path, inbox, batch={"files": 2})
    (key,) = keys(tick(more, instance))
    result = materialize(more, partition_key=key, resources=resources, instance=instance)

    assert rows(
        warehouse,
        "select id, amount, n, extra, _file, _row from inbox.orders where _batch_key = ? "
        "order by id",
        key,
    ) == [
        (3, 2.0, 4, None, "b.jsonl", 2),
        (5, 2.5, 7, None, "b.jsonl", 5),
        (6, None, None, "new", "b.jsonl", 6),
    ]
    assert _quarantine(warehouse) == [
        (
            "b.jsonl",
            1,
            "amount, n",
            'amount: "oops" does not fit DOUBLE; n: 2.7 does not fit BIGINT',
            '{"id": 2, "amount": "oops", "n": 2.7}',
        ),
        ("b.jsonl", 3, None, "not valid JSON", "not json"),
        ("b.jsonl", 4, "id", 'id: "x" does not fit BIGINT', '{"id": "x", "amount": null}'),
        ("c.jsonl", 1, None, "not valid JSON", "garbage"),
        ("c.jsonl", 2, None, "a JSON value that is not an object", "[1, 2]"),
    ]
    metadata = _metadata(result)
    assert metadata["rows_read"] == 8 == metadata["rows_landed"] + metadata["rows_quarantined"]
    assert (metadata["rows_landed"], metadata["rows_quarantined"]) == (3, 5)
    assert metadata["rows_by_file"] == {"b.jsonl": 3, "c.jsonl": 0}
    assert metadata["new_columns"] == ["extra"]
    # The same figures as asset checks in the UI: the warehouse holds exactly what landed,
    # the new column is drift, and 5 of 8 rows quarantined is far over the 1 % default.
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rows_reconcile"].passed
    assert checks["rows_reconcile"].metadata["rows_landed"].value == 3
    assert not checks["schema_drift"].passed
    assert checks["schema_drift"].metadata["new_columns"].value == ["extra"]
    assert not checks["unplaced_rows"].passed
    assert checks["unplaced_rows"].metadata["quarantine_share"].value == 0.625
    # The check shows why, and which rows, without a trip to the warehouse.
    unplaced = checks["unplaced_rows"].metadata
    assert unplaced["quarantine_top_reasons"].value == {
        "not valid JSON": 2,
        "a JSON value that is not an object": 1,
        'amount: "oops" does not fit DOUBLE; n: 2.7 does not fit BIGINT': 1,
        'id: "x" does not fit BIGINT': 1,
    }
    assert unplaced["quarantine_sample"].value.splitlines() == [
        "| where | reason | raw value |",
        "|---|---|---|",
        '| b.jsonl:1 | amount: "oops" does not fit DOUBLE; n: 2.7 does not fit BIGINT '
        '| `{"id": 2, "amount": "oops", "n": 2.7}` |',
        "| b.jsonl:3 | not valid JSON | `not json` |",
        '| b.jsonl:4 | id: "x" does not fit BIGINT | `{"id": "x", "amount": null}` |',
        "| c.jsonl:1 | not valid JSON | `garbage` |",
        "| c.jsonl:2 | a JSON value that is not an object | `[1, 2]` |",
    ]
    query = unplaced["quarantine_query"].value
    expected = (
        'select * from "inbox"."_quarantine" where _batch_key in (\'KEY\') order by file, line'
    )
    assert query == expected.replace("KEY", key)
    assert len(rows(warehouse, query)) == 5


def test_csv_row_is_the_record_number_across_quoted_newlines_and_rejects(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    # Records: 1 spans two lines, 2 has a bad amount, 3 spans two lines, 4 misses a column,
    # 5 is plain, 6 spans two lines and has a bad amount, 7 is plain.
    (inbox / "notes.csv").write_text(
        'id,note,amount\n1,"two\nlines",1.5\n2,plain,oops\n3,"a\nb",2\n4,y\n5,z,4\n'
        '6,"multi\nline",zz\n7,last,5\n'
    )
    defs = _defs(tmp_path, inbox, columns={"id": "BIGINT", "note": "VARCHAR", "amount": "DOUBLE"})
    (key,) = keys(tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, note, amount, _row from inbox.orders order by id") == [
        (1, "two\nlines", 1.5, 1),
        (3, "a\nb", 2.0, 3),
        (5, "z", 4.0, 5),
        (7, "last", 5.0, 7),
    ]
    # `line` counts each record as one line after the header: record number + 1.
    assert [(line, column, raw) for _, line, column, _, raw in _quarantine(warehouse)] == [
        (3, "amount", "2,plain,oops"),
        (5, "amount", "4,y"),
        (7, "amount", '6,"multi\nline",zz'),
    ]
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        7,
        4,
        3,
    )


def _line_too_long_file(inbox: Path) -> None:
    good = "".join(f"{i},ok\n" for i in range(1, 11))
    (inbox / "export.csv").write_text(f"id,note\n{good}11,{'x' * 3_000_000}\n")


def test_a_line_over_max_line_size_quarantines_the_file_naming_it_the_cause_and_the_fix(
    tmp_path: Path,
    inbox: Path,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _line_too_long_file(inbox)
    defs = _defs(tmp_path, inbox, max_line_size="2MB")
    (key,) = keys(tick(defs, instance))
    capfd.readouterr()
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    reason = (
        "export.csv has a line of 3,000,004 bytes, longer than max_line_size (2,000,000 bytes). "
        "Fix: raise max_line_size in the source's defs.yaml, e.g. max_line_size: 7MB"
    )
    assert _quarantine(warehouse) == [("export.csv", None, None, f"file not read: {reason}", None)]
    metadata = _metadata(result)
    assert metadata["bad_files"] == {"export.csv": reason}
    # Its 11 records are not landed: they weigh on the quarantine share, which warns.
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        11,
        0,
        11,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["unplaced_rows"].passed
    assert checks["unplaced_rows"].metadata["quarantine_share"].value == 1.0
    warnings = [line.split(" - WARNING - ")[1] for line in capfd.readouterr().err.splitlines()
                if " - WARNING - " in line]  # fmt: skip
    assert warnings == [
        f"__ephemeral_asset_job__ - {result.run_id} - inbox__orders - inbox.orders: export.csv "
        "quarantined whole "
        f"(11 record(s) not landed): {reason}"
    ]

    failing = _defs(tmp_path / "f", inbox, max_line_size="2MB", on_bad_file="fail", table="strict")
    (fail_key,) = keys(tick(failing, instance))
    failed = materialize(
        failing, partition_key=fail_key, resources=resources, instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    assert failure_message(failed) == (
        f"ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'f' / 'inbox' / 'defs.yaml'}: max_line_size: export.csv has a line of "
        "3,000,004 bytes, longer than max_line_size (2,000,000 bytes). Fix: e.g. "
        "max_line_size: 7MB."
    )


def test_the_default_max_line_size_lands_a_3_mb_line(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    _line_too_long_file(inbox)
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select count(*), max(length(note)) from inbox.orders") == [
        (11, 3_000_000)
    ]


def test_on_bad_file_fail_names_the_defs_file_the_field_and_a_fix(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, resources
) -> None:
    (inbox / "a.parquet").write_bytes(b"not parquet at all")
    defs = _defs(tmp_path, inbox, on_bad_file="fail")
    (key,) = keys(tick(defs, instance))
    failed = materialize(
        defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
    )
    message = failure_message(failed)
    assert message.startswith(
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'inbox' / 'defs.yaml'}: on_bad_file: a.parquet cannot be read: "
    )
    assert message.endswith(
        " (on_bad_file: fail stops the run; nothing was landed or moved). Fix: fix or re-export "
        "the file and upload it again, or set on_bad_file: quarantine to land the other files "
        "and keep this one in the source's _quarantine table."
    )
    assert str(tmp_path / "warehouse") not in message and ".staging" not in message


def test_csv_row_is_the_record_number_in_a_file_larger_than_one_read_buffer(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    # 400,000 records of ~90 bytes: past DuckDB's 32 MB CSV buffer, so a parallel reader
    # would split the file; three records with a bad amount, at the start, middle and end.
    records = 400_000
    bad = (1, 150_000, records - 1)
    generate = (
        "copy (select i as id, case when i in (1, 150000, 399999) then 'oops' "  # noqa: S608
        "else (i / 4)::varchar end as amount, repeat('x', 80) as pad "
        f"from range(1, {records + 1}) t(i)) to '{inbox / 'big.csv'}' (header)"
    )
    duckdb.sql(generate)
    defs = _defs(tmp_path, inbox, columns={"id": "BIGINT", "amount": "DOUBLE", "pad": "VARCHAR"})
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(
        warehouse,
        "select count(*), count(*) filter (where _row <> id), min(_row), max(_row) "
        "from inbox.orders",
    ) == [(records - len(bad), 0, 2, records)]
    assert [line - 1 for _, line, *_ in _quarantine(warehouse)] == list(bad)


def test_quarantine_keeps_the_original_bytes_of_each_row(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    # A latin-1 export read as UTF-8 (the default): the Björk row cannot be decoded.
    (inbox / "artists.csv").write_bytes(
        "id,name,amount\n1,Abba,2\n2,Björk,3\n3,Sigur Rós,oops\n4,\"two\nlines\",zz\n5,ok,4\n"
        .encode("latin-1")
    )  # fmt: skip
    (inbox / "b.jsonl").write_bytes(b'{"id": 6, "name": "x", "amount": 1}\nnot json\n')
    defs = _defs(tmp_path, inbox, batch={"files": 2})
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id from inbox.orders order by id") == [(1,), (5,), (6,)]
    assert rows(
        warehouse, "select file, line, raw_value, raw from inbox._quarantine order by file, line"
    ) == [
        ("artists.csv", 3, "2,Bj??k,3", b"2,Bj\xf6rk,3"),
        ("artists.csv", 4, "3,Sigur R??,oops", b"3,Sigur R\xf3s,oops"),
        ("artists.csv", 5, '4,"two\nlines",zz', b'4,"two\nlines",zz'),
        ("b.jsonl", 2, "not json", b"not json"),
    ]


_CSV = "order_id,ordered_at,amount\n1,2026-01-05T10:00:00Z,12.5\n2,2026-01-05T11:30:00Z,7\n"
_JSONL = (
    '{"order_id": 3, "ordered_at": "2026-01-06T09:00:00Z", "amount": 3.25}\n'
    '{"order_id": 4, "ordered_at": "2026-01-06T09:05:00Z", "amount": 8}\n'
)


def _types(warehouse: Warehouse, schema: str) -> list[tuple]:
    return rows(
        warehouse,
        "select column_name, data_type from information_schema.columns where table_schema = ? "
        "and table_name = 'orders' and column_name in ('order_id', 'ordered_at', 'amount') "
        "order by column_name",
        schema,
    )


def test_the_same_files_in_either_order_give_the_same_column_types(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text(_CSV)
    (inbox / "b.jsonl").write_text(_JSONL)
    for source, first in (("csv_first", "a.csv"), ("json_first", "b.jsonl")):
        later = "b.jsonl" if first == "a.csv" else "a.csv"
        attributes = {"path": str(inbox), "table": "orders", "settle": "0s"}
        defs = build_source(LocalFileSource, tmp_path / source, {**attributes, "patterns": [first]})
        (key,) = keys(tick(defs, instance))
        materialize(defs, partition_key=key, resources=resources, instance=instance)
        both = build_source(
            LocalFileSource, tmp_path / source, {**attributes, "patterns": [first, later]}
        )
        (key,) = keys(tick(both, instance))
        materialize(both, partition_key=key, resources=resources, instance=instance)
        assert warehouse.count(source, "orders") == 4
    expected = [
        ("amount", "DOUBLE"),
        ("order_id", "BIGINT"),
        ("ordered_at", "TIMESTAMP WITH TIME ZONE"),
    ]
    assert _types(warehouse, "csv_first") == expected == _types(warehouse, "json_first")
    assert rows(warehouse, "select count(*) from csv_first._quarantine") == [(0,)]


def test_a_bad_amount_in_the_first_file_is_quarantined_and_amount_stays_numeric(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "first.csv").write_text(
        "order_id,ordered_at,amount\n1,2026-01-05T10:00:00Z,12.5\n2,2026-01-05T11:00:00Z,n/a\n"
        "3,2026-01-05T12:00:00Z,4\n"
    )
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert _types(warehouse, "inbox") == [
        ("amount", "DOUBLE"),
        ("order_id", "BIGINT"),
        ("ordered_at", "TIMESTAMP WITH TIME ZONE"),
    ]
    assert rows(warehouse, "select order_id, amount from inbox.orders order by 1") == [
        (1, 12.5),
        (3, 4.0),
    ]
    assert _quarantine(warehouse) == [
        (
            "first.csv",
            3,
            "amount",
            'Error when converting column "amount". Could not convert string "n/a" to \'DOUBLE\'',
            "2,2026-01-05T11:00:00Z,n/a",
        )
    ]
    # A later file cannot turn it into text either: its bad value is quarantined too.
    (inbox / "second.jsonl").write_text('{"order_id": 4, "amount": "ten"}\n')
    (later,) = keys(tick(defs, instance))
    materialize(defs, partition_key=later, resources=resources, instance=instance)
    assert _types(warehouse, "inbox")[0] == ("amount", "DOUBLE")
    assert _quarantine(warehouse)[-1][1:4] == (1, "amount", 'amount: "ten" does not fit DOUBLE')


def test_declared_column_types_win_in_every_format(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text(_CSV)
    (inbox / "b.jsonl").write_text(_JSONL)
    os.utime(inbox / "b.jsonl", (1_700_000_000, 1_700_000_000))  # JSON Lines first
    declared = {"amount": "DECIMAL(12,2)", "order_id": "VARCHAR", "ordered_at": "TIMESTAMPTZ"}
    defs = _defs(tmp_path, inbox, columns=declared, batch={"files": 2})
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert _types(warehouse, "inbox") == [
        ("amount", "DECIMAL(12,2)"),
        ("order_id", "VARCHAR"),
        ("ordered_at", "TIMESTAMP WITH TIME ZONE"),
    ]
    assert rows(warehouse, "select order_id, amount::varchar from inbox.orders order by 1") == [
        ("1", "12.50"),
        ("2", "7.00"),
        ("3", "3.25"),
        ("4", "8.00"),
    ]


def test_a_declared_type_converts_the_landed_column_or_stops_naming_the_field(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("id,amount,code\n1,12.5,A1\n")
    os.utime(inbox / "a.csv", (1_700_000_000, 1_700_000_000))
    (first,) = keys(tick(_defs(tmp_path, inbox), instance))
    materialize(_defs(tmp_path, inbox), partition_key=first, resources=resources, instance=instance)
    (inbox / "b.csv").write_text("id,amount,code\n2,7,B2\n")
    declared = _defs(tmp_path, inbox, columns={"amount": "DECIMAL(12,2)"})
    (second,) = keys(tick(declared, instance))
    materialize(declared, partition_key=second, resources=resources, instance=instance)
    assert ("amount", "DECIMAL(12,2)") in _types(warehouse, "inbox")
    assert rows(warehouse, "select id, amount::varchar from inbox.orders order by id") == [
        (1, "12.50"),
        (2, "7.00"),
    ]

    (inbox / "c.csv").write_text("id,amount,code\n3,1,7\n")
    strict = _defs(tmp_path, inbox, columns={"code": "BIGINT"})
    (third,) = keys(tick(strict, instance))
    failed = materialize(
        strict, partition_key=third, resources=resources, instance=instance, raise_on_error=False
    )
    assert failure_message(failed) == (
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'inbox' / 'defs.yaml'}: columns.code: the table inbox.orders holds code "
        "as VARCHAR, and its landed values do not all convert to BIGINT (Could not convert "
        "string 'A1' to INT64). Fix: fix or remove those rows, or declare a type that holds them."
    )
    assert warehouse.count("inbox", "orders") == 2  # nothing of the failed landing

    with pytest.raises(Exception) as wrong:
        _defs(tmp_path / "w", inbox, columns={"amount": "DECIMEL(12,2)"})
    assert str(wrong.value).endswith(
        "columns.amount: 'DECIMEL(12,2)' is not a DuckDB type. Fix: e.g. BIGINT, DOUBLE, "
        "DECIMAL(12,2), DATE, TIMESTAMPTZ or VARCHAR."
    )


def test_parquet_values_that_do_not_fit_a_declared_type_are_quarantined(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    with duckdb.connect() as writer:
        values = "(1, 1.5::double), (2, 1e15::double), (3, 2.25::double)"
        target = inbox / "a.parquet"
        writer.execute(
            f"copy (select * from (values {values}) t(order_id, amount)) to '{target}' "  # noqa: S608
            "(format parquet)"
        )
    defs = _defs(tmp_path, inbox, columns={"amount": "DECIMAL(12,2)"})
    (key,) = keys(tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select order_id, amount::varchar from inbox.orders order by 1") == [
        (1, "1.50"),
        (3, "2.25"),
    ]
    assert _quarantine(warehouse) == [
        (
            "a.parquet",
            2,
            "amount",
            "amount: 1000000000000000.0 does not fit DECIMAL(12,2)",
            "order_id=2, amount=1000000000000000.0",
        )
    ]
    assert _metadata(result)["rows_read"] == 3


def test_a_column_empty_in_the_first_file_takes_its_type_from_the_first_values(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("order_id,discount\n1,\n2,\n")
    os.utime(inbox / "a.csv", (1_700_000_000, 1_700_000_000))
    (inbox / "b.csv").write_text("order_id,discount\n3,0.5\n4,1\n")
    defs = _defs(tmp_path, inbox)
    for key in keys(tick(defs, instance)):  # a.csv first: discount has no value yet
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert ("discount", "DOUBLE") in rows(
        warehouse,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'inbox' and table_name = 'orders'",
    )
    assert rows(warehouse, "select order_id, discount from inbox.orders order by 1") == [
        (1, None),
        (2, None),
        (3, 0.5),
        (4, 1.0),
    ]


def test_a_file_whose_columns_would_land_as_one_is_quarantined_naming_them(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("id,userId,user_id\n1,10,20\n2,11,21\n")
    (inbox / "b.csv").write_text("id,userId\n3,12\n")
    defs = _defs(tmp_path, inbox, batch={"files": 2})
    (key,) = keys(tick(defs, instance))

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: DuckDB's `Table "orders" does not have a column with name "user_id_1"`.
    reason = (
        "a.csv: columns 'userId', 'user_id' would all land as column 'user_id' (the "
        "warehouse's snake_case names), so one of their values would be lost; rename one of "
        "them in the file"
    )
    assert _quarantine(warehouse) == [("a.csv", None, None, f"file not read: {reason}", None)]
    assert rows(warehouse, "select id, user_id, _file from inbox.orders") == [(3, 12, "b.csv")]
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"]) == (3, 1)
    assert metadata["rows_quarantined"] == 2


def test_a_record_not_in_utf8_is_quarantined_with_the_encoding_fix_and_lands_once_declared(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "latin.csv").write_bytes(b"id,name\n1,caf\xe9\n2,ok\n")
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))

    materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert rows(warehouse, "select id, name from inbox.orders") == [(2, "ok")]
    assert rows(warehouse, "select line, reason, raw from inbox._quarantine") == [
        (
            2,
            "Invalid unicode (byte sequence mismatch) detected. This file is not utf-8 "
            "encoded. Fix: if the file is in another encoding, set `encoding:` in the "
            "source's defs.yaml (e.g. latin-1)",
            b"1,caf\xe9",
        )
    ]
    declared = _defs(tmp_path, inbox, encoding="latin-1")
    materialize(declared, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, name from inbox.orders order by id") == [
        (1, "café"),
        (2, "ok"),
    ]
    assert warehouse.count("inbox", "_quarantine") == 0


def test_a_nested_object_with_keys_differing_in_case_lands_whole_as_json(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "n.jsonl").write_text('{"id": 1, "a": {"X": 1, "x": 2}}\n{"id": 2, "a": {"x": 3}}\n')
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))

    # Before: the run failed on DuckDB's `Duplicate STRUCT type argument name "x"`.
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert rows(warehouse, "select id, a::varchar from inbox.orders order by id") == [
        (1, '{"X":1,"x":2}'),
        (2, '{"x":3}'),
    ]
    assert _metadata(result)["rows_quarantined"] == 0


def test_a_file_with_a_column_named_like_the_platforms_own_is_quarantined_naming_it(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("id,_row\n1,99\n")
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))

    materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: DuckDB's `Table "orders" does not have a column with name "_row_1"`.
    reason = (
        "a.csv: column '_row' would land as the platform's own column '_row' (every landing "
        "writes _file, _row, _batch_key, _loaded_at); rename it in the file"
    )
    assert _quarantine(warehouse) == [("a.csv", None, None, f"file not read: {reason}", None)]


def test_a_csv_no_record_of_which_reads_is_quarantined_with_the_delimiter_fix(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "semi.csv").write_text("id;name;amount\n1;a;1,5\n2;b;2,5\n")
    (inbox / "header_only.csv").write_text("id;name;amount\n")
    defs = _defs(tmp_path, inbox, batch={"files": 2})
    (key,) = keys(tick(defs, instance))

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: every record failed to parse, the file counted as empty, and the run succeeded
    # with 0 rows read.
    reason = (
        "semi.csv: none of its records could be read with delimiter ','; the file looks "
        "';'-separated. Fix: set `delimiter: ';'` in the source's defs.yaml"
    )
    assert _quarantine(warehouse) == [("semi.csv", None, None, f"file not read: {reason}", None)]
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        2,
        0,
        2,
    )

    declared = _defs(tmp_path, inbox, batch={"files": 2}, delimiter=";")
    materialize(declared, partition_key=key, resources=resources, instance=instance)
    landed = "select id, name, amount, _file, _row from inbox.orders order by id"
    assert rows(warehouse, landed) == [
        (1, "a", "1,5", "semi.csv", 1),
        (2, "b", "2,5", "semi.csv", 2),
    ]
    assert warehouse.count("inbox", "_quarantine") == 0


def test_a_tsv_file_is_read_tab_separated(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "orders.tsv").write_text("id\tname\n1\ta, b\n2\tc\n")
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))

    materialize(defs, partition_key=key, resources=resources, instance=instance)

    assert rows(warehouse, "select id, name from inbox.orders order by id") == [
        (1, "a, b"),
        (2, "c"),
    ]


def test_a_utf16_file_is_quarantined_naming_the_encoding_and_lands_once_declared(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "wide.csv").write_bytes("id,name\n1,café\n2,b\n".encode("utf-16"))
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))

    materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: "Parser Error: unterminated quoted identifier at or near ..." (its header's
    # NUL bytes had reached a SQL statement).
    reason = (
        "wide.csv is UTF-16 encoded (it starts with a UTF-16 byte order mark). Fix: set "
        "`encoding: utf-16` in the source's defs.yaml"
    )
    assert _quarantine(warehouse) == [("wide.csv", None, None, f"file not read: {reason}", None)]
    declared = _defs(tmp_path, inbox, encoding="utf-16")
    materialize(declared, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, name, _row from inbox.orders order by id") == [
        (1, "café", 1),
        (2, "b", 2),
    ]
    assert warehouse.count("inbox", "_quarantine") == 0


def test_a_json_array_file_lands_each_element_as_a_row_numbered_by_its_place(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    # Pretty-printed, as exports are: elements span lines, one value holds an escaped newline.
    (inbox / "export.json").write_text(
        '[\n  {\n    "id": 1,\n    "note": "a\\nb",\n    "amount": 12345.6789\n  },\n'
        '  42,\n  {"id": 3, "note": "c", "amount": 2}\n]\n'
    )
    (inbox / "cut.json").write_text('[{"id": 9, "note": "x"}, {"id": ')
    defs = _defs(tmp_path, inbox, batch={"files": 2}, columns={"amount": "DECIMAL(10,4)"})
    (key,) = keys(tick(defs, instance))

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)

    # Before: each file was one JSON value, quarantined whole as "not an object".
    assert rows(
        warehouse, "select id, note, amount, _file, _row from inbox.orders order by id"
    ) == [
        (1, "a\nb", Decimal("12345.6789"), "export.json", 1),
        (3, "c", Decimal("2"), "export.json", 3),
    ]
    assert rows(
        warehouse, "select file, line, reason, raw from inbox._quarantine order by file"
    ) == [
        (
            "cut.json",
            None,
            "file not read: cut.json is a JSON array that cannot be read: Invalid Input Error: "
            'Malformed JSON in file "cut.json", at byte 8 in record/value 3: unexpected end of '
            "data.",
            None,
        ),
        ("export.json", 2, "a JSON value that is not an object", b"42"),
    ]
    metadata = _metadata(result)
    assert (metadata["rows_read"], metadata["rows_landed"], metadata["rows_quarantined"]) == (
        4,
        2,
        2,
    )
