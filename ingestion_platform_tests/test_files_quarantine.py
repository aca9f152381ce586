"""Nothing is lost: every bad value and bad record is in `<source>._quarantine`, exactly."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.components.file_source import LocalFileSource
from ingestion_platform.warehouse import Warehouse
from ingestion_platform_tests.files_helpers import keys, rows, tick
from ingestion_platform_tests.sources import build_source, materialize


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


def _defs(tmp_path: Path, inbox: Path, **extra: object) -> dg.Definitions:
    attributes = {"path": str(inbox), "table": "orders", "settle": "0s", **extra}
    return build_source(LocalFileSource, tmp_path / "inbox", attributes)


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
                "order by column_name") == [("DOUBLE",), ("UBIGINT",), ("UBIGINT",)]  # fmt: skip

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
            'amount: "oops" does not fit DOUBLE; n: 2.7 does not fit UBIGINT',
            '{"id": 2, "amount": "oops", "n": 2.7}',
        ),
        ("b.jsonl", 3, None, "not valid JSON", "not json"),
        ("b.jsonl", 4, "id", 'id: "x" does not fit UBIGINT', '{"id": "x", "amount": null}'),
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
