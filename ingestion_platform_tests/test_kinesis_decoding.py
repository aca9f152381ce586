"""How records become rows: JSON Lines, KPL aggregates, raw bytes, declared column types,
a column whose type changes, byte-sized cuts, LATEST, and declaration errors."""

import json
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.declaration import DeclarationError, SourceFailure
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.kinesis_producer import put
from ingestion_platform.sources.kinesis.connectors.decode import (
    Decoding,
    aggregate,
    decode,
    decode_columns,
)
from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisRecord
from ingestion_platform_tests.kinesis_emulators import (
    client,
    declare,
    manifest_rows,
    tick,
)
from ingestion_platform_tests.sources import failure_message, materialize

pytestmark = [pytest.mark.usefixtures("aws_env"), pytest.mark.stream_shards(1)]


def _land_all(
    defs: dg.Definitions, instance: dg.DagsterInstance, warehouse_path: Path, resources: dict
) -> list[str]:
    keys = [r.partition_key for r in tick(defs, instance, warehouse_path).run_requests]
    for key in keys:
        materialize(defs, partition_key=key, resources=resources, instance=instance)
    return keys


def test_json_lines_kpl_aggregates_and_declared_types(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    lines = b'{"n": 1, "at": "2026-11-01T10:00:00Z"}\n{"n": 2, "at": "2026-11-01T11:00:00Z"}\n'
    aggregated = aggregate([("k1", lines), ("k2", b'{"n": 3, "at": "2026-11-02T00:00:00Z"}')])
    put(client(moto_endpoint), stream, [{"Data": aggregated, "PartitionKey": "agg"}])
    defs = declare(
        tmp_path,
        moto_endpoint,
        stream,
        batch={"records": 1},
        decoding="jsonl",
        kpl=True,
        columns={"at": "TIMESTAMPTZ"},
    )
    _land_all(defs, instance, warehouse_path, resources)
    rows = warehouse.query(
        'select n, epoch("at")::bigint, _sub_sequence, _partition_key from clicks.events order by n'
    )
    assert rows == [
        (1, 1793527200, 0, "k1"),
        (2, 1793530800, 1, "k1"),
        (3, 1793577600, 100_000, "k2"),
    ]
    (kind,) = warehouse.query(
        "select data_type from information_schema.columns where table_schema = 'clicks' "
        "and table_name = 'events' and column_name = 'at'"
    )[0]
    assert kind == "TIMESTAMP WITH TIME ZONE"


def test_raw_bytes_land_as_a_blob(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    put(client(moto_endpoint), stream, [{"Data": b"\x00\xffbinary", "PartitionKey": "p"}])
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 1}, decoding="raw")
    _land_all(defs, instance, warehouse_path, resources)
    assert warehouse.query("select data, _partition_key from clicks.events") == [
        (b"\x00\xffbinary", "p")
    ]


def test_a_column_whose_values_change_type_is_widened_not_truncated(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 2})
    put(
        kinesis,
        stream,
        [{"Data": json.dumps({"n": n, "v": n}).encode(), "PartitionKey": "p"} for n in (1, 2)],
    )
    _land_all(defs, instance, warehouse_path, resources)
    put(
        kinesis,
        stream,
        [
            {"Data": json.dumps({"n": 3, "v": 2.5}).encode(), "PartitionKey": "p"},
            {"Data": json.dumps({"n": 4, "v": 7, "new": "x"}).encode(), "PartitionKey": "p"},
        ],
    )
    _land_all(defs, instance, warehouse_path, resources)
    put(
        kinesis,
        stream,
        [{"Data": json.dumps({"n": n, "v": "text"}).encode(), "PartitionKey": "p"} for n in (5, 6)],
    )
    _land_all(defs, instance, warehouse_path, resources)
    rows = warehouse.query("select n, v::varchar, new from clicks.events order by n")
    assert rows == [
        (1, "1.0", None),
        (2, "2.0", None),
        (3, "2.5", None),
        (4, "7.0", "x"),
        (5, '"text"', None),
        (6, '"text"', None),
    ]


def test_a_bytes_batch_cuts_once_that_many_bytes_are_pending(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    record = json.dumps({"pad": "x" * 90}).encode()  # 101 bytes
    assert len(record) == 101
    put(client(moto_endpoint), stream, [{"Data": record, "PartitionKey": "p"}] * 25)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"bytes": "1KB"})
    requests = tick(defs, instance, warehouse_path).run_requests
    # 1,000 bytes are reached by the 10th record: two full cuts of 10, landed as one
    # partition (core/backlog.py); 5 records (505 B) wait.
    assert len(requests) == 1
    assert [row[4] for row in manifest_rows(warehouse)] == [20]


def test_latest_starts_after_the_first_tick(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put(kinesis, stream, [{"Data": b'{"n": 0}', "PartitionKey": "p"}] * 5)
    defs = declare(tmp_path, moto_endpoint, stream, batch={"records": 3}, start_at="LATEST")
    assert tick(defs, instance, warehouse_path).run_requests == []
    put(kinesis, stream, [{"Data": b'{"n": 1}', "PartitionKey": "p"}] * 3)
    assert len(tick(defs, instance, warehouse_path).run_requests) == 1
    assert [row[4] for row in manifest_rows(warehouse)] == [3]


def test_a_missing_endpoint_variable_fails_only_the_run_naming_it(
    stream: str,
    tmp_path: Path,
    resources: dict,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLICKS_TEST_ENDPOINT", raising=False)
    defs = declare(
        tmp_path,
        {"env": "CLICKS_TEST_ENDPOINT"},
        stream,
        batch={"every": "hour", "start": "2026-01-01"},
    )
    result = materialize(
        defs,
        partition_key="2026-01-01-00:00",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert failure_message(result) == (
        "ingestion_platform.core.declaration.DeclarationError: "
        f"{tmp_path / 'clicks' / 'defs.yaml'}: endpoint_url: environment variable "
        "CLICKS_TEST_ENDPOINT is not set (source 'clicks'). Fix: export CLICKS_TEST_ENDPOINT "
        "before running this source's assets."
    )


def test_a_files_batch_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError) as raised:
        declare(tmp_path, "http://127.0.0.1:1", "s", batch={"files": 3})
    assert str(raised.value) == (
        f"{tmp_path / 'clicks' / 'defs.yaml'}: batch: a stream has no files. Fix: use "
        "`records: N`, `bytes: 64MB` or a time batch."
    )


def test_a_stream_named_by_its_arn_is_read_the_same(
    moto_endpoint: str,
    stream: str,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    kinesis = client(moto_endpoint)
    put(kinesis, stream, [{"Data": b'{"n": 1}', "PartitionKey": "p"}])
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    defs = declare(tmp_path, moto_endpoint, summary["StreamARN"], batch={"records": 1})
    _land_all(defs, instance, warehouse_path, resources)
    assert warehouse.query("select n, _shard_id from clicks.events") == [
        (1, "shardId-000000000000")
    ]


def test_a_stream_that_is_not_there_fails_the_tick_naming_the_source_and_the_fix(
    moto_endpoint: str, tmp_path: Path, warehouse_path: Path, instance: dg.DagsterInstance
) -> None:
    defs = declare(tmp_path, moto_endpoint, "no_such_stream", region="eu-west-1")
    with pytest.raises(SourceFailure) as failed:
        tick(defs, instance, warehouse_path)
    assert str(failed.value) == (
        f"source 'clicks' ({tmp_path / 'clicks' / 'defs.yaml'}): stream 'no_such_stream' does "
        f"not exist at {moto_endpoint} in region eu-west-1. Fix: check `stream`, `region` and "
        "`endpoint_url`"
    )


@pytest.mark.parametrize("decoding", ["json", "raw"])
def test_columns_of_good_messages_decode_in_arrow_exactly_as_record_by_record(
    decoding: Decoding,
) -> None:
    payloads = [json.dumps({"n": n, "text": "é" * n}).encode() for n in range(5)]
    columns = decode_columns(
        "S", [10, 11, 13, 14, 20], ["a", "b", "a", "c", "a"], [1_000, 1_001, 1_002, 1_003, 1_004],
        payloads, decoding=decoding, max_record_bytes=1_000,
    )  # fmt: skip
    records = [
        KinesisRecord("S", str(sequence), key, arrival, payload)
        for sequence, key, arrival, payload in zip(
            [10, 11, 13, 14, 20],
            ["a", "b", "a", "c", "a"],
            range(1_000, 1_005),
            payloads,
            strict=True,
        )
    ]
    one_by_one = decode(records, decoding=decoding, kpl=False, max_record_bytes=1_000)
    assert columns.rows.equals(one_by_one.rows)
    assert (columns.records_read, columns.bytes_read) == (5, sum(map(len, payloads)))
    assert (columns.bad, one_by_one.bad) == ([], [])


def test_columns_with_a_bad_message_name_it_as_record_by_record_does() -> None:
    decoded = decode_columns(
        "S", [1, 2, 3], ["k"] * 3, [5, 6, 7], [b'{"n": 1}', b"\xff\xfe", b'{"n": 3}' + b" " * 50],
        decoding="json", max_record_bytes=40,
    )  # fmt: skip
    assert decoded.rows.column("_sequence_number").to_pylist() == ["1"]
    assert [(bad.location, bad.reason) for bad in decoded.bad] == [
        ("S:2", "not UTF-8 text: invalid start byte at byte 0"),
        ("S:3", "record of 58 bytes is over max_record_bytes (40)"),
    ]
    assert decoded.records_read == 3
