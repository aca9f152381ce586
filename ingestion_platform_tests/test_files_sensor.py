"""The files sensor with the settings users set: a cut is final only with its run, a dropped
file lands with `settle` and `max_wait` together, and the cursor holds only what waits."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files import sensor as file_sensor
from ingestion_platform_tests.files_helpers import (
    evaluate,
    files_lag,
    files_sensor,
    keys,
    local_source,
    rows,
    tick,
)
from ingestion_platform_tests.sources import materialize, start_only_run

_defs = local_source
_lag = files_lag


def test_a_preview_that_is_never_committed_consumes_no_file(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("id\n1\n2\n")
    defs = _defs(tmp_path, inbox, settle="0s")

    # What `dagster sensor preview` does, and a daemon that dies before committing the tick.
    previewed = evaluate(defs, instance)
    (key,) = keys(previewed)
    assert keys(evaluate(defs, instance, previewed.cursor)) == [key]

    committed = tick(defs, instance, previewed.cursor)
    assert keys(committed) == [key]
    assert [r.run_key for r in committed.run_requests or []] == [
        r.run_key for r in previewed.run_requests or []
    ]
    assert keys(tick(defs, instance, committed.cursor)) == []  # final now: never twice
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _batch_key from inbox.orders order by id") == [
        (1, key),
        (2, key),
    ]


def test_a_tick_never_committed_is_asked_for_again_as_it_was(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv").write_text("id\n1\n")
    (inbox / "b.csv").write_text("id\n2\n")
    defs = _defs(tmp_path, inbox, settle="0s", batch={"files": 2})
    # The daemon adds the tick's partition, then dies before it creates the run.
    died = evaluate(defs, instance)
    (key,) = keys(died)
    for request in died.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    # A file copied in with an old mtime sorts first: planned afresh, a.csv and b.csv would
    # split across two batches while the partition above still holds both.
    older = inbox / "z.csv"
    older.write_text("id\n3\n")
    hour_ago = time.time() - 3600
    os.utime(older, (hour_ago, hour_ago))

    again = tick(defs, instance)  # the cursor the daemon last committed
    assert keys(again) == [key]
    assert [r.run_key for r in again.run_requests or []] == [
        r.run_key for r in died.run_requests or []
    ]
    (inbox / "y.csv").write_text("id\n4\n")
    (rest,) = keys(tick(defs, instance, again.cursor))
    for partition in (key, rest):
        materialize(defs, partition_key=partition, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _batch_key from inbox.orders order by id") == [
        (1, key),
        (2, key),
        (3, rest),
        (4, rest),
    ]


def test_a_dropped_file_lands_with_settle_and_max_wait_together(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    # The demo inbox's settings, shortened: a batch of 5 files, or whatever waited max_wait.
    defs = _defs(tmp_path, inbox, settle="1s", batch={"files": 5, "max_wait": "2s"})
    (inbox / "dropped.csv").write_text("id\n1\n")
    cursor, reasons, cut = None, [], []
    deadline = time.monotonic() + 8
    while not cut and time.monotonic() < deadline:
        result = tick(defs, instance, cursor)
        cursor, cut = result.cursor, keys(result)
        if not cut:
            reasons.append(str(result.skip_reason.skip_message))  # type: ignore[union-attr]
        time.sleep(0.5)

    assert [key.split("@")[0] for key in cut] == ["dropped.csv"], reasons
    assert reasons[0] == "no new partition: 0 complete file(s) not yet cut, 1 settling"
    waiting = [reason for reason in reasons if reason.startswith("no new partition: 1 complete")]
    assert waiting and "the batch waits for 5 files, or max_wait cuts it at " in waiting[-1]


def test_the_cursor_holds_only_what_waits_however_many_files_are_kept(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    for number in range(300):
        (inbox / f"kept_{number:03}.csv").write_text(f"id\n{number}\n")
    defs = _defs(tmp_path, inbox, settle="1s", batch={"files": 100})
    first = tick(defs, instance)
    assert keys(first) == []
    time.sleep(1.1)
    second = tick(defs, instance, first.cursor)
    # Three full batches at once: one partition of all 300 (core/backlog.py).
    assert [key.split("@")[0] for key in keys(second)] == ["kept_000.csv+299"]

    later = tick(defs, instance, second.cursor)
    assert keys(later) == []
    assert json.loads(later.cursor or "{}")["settling"] == {}
    assert len(later.cursor or "") < 200
    after = tick(defs, instance, later.cursor)
    assert keys(after) == [] and len(after.cursor or "") < 200


def test_the_lag_counts_a_complete_file_until_its_partition_lands(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, resources
) -> None:
    defs = _defs(tmp_path, inbox, settle="1s")
    dropped = inbox / "a.csv"
    dropped.write_text("id\n1\n")
    assert _lag(defs, instance).metadata["waiting_files"].value == 0  # still settling
    hour_ago = time.time() - 3600
    os.utime(dropped, (hour_ago, hour_ago))

    waiting = _lag(defs, instance)
    assert waiting.metadata["waiting_files"].value == 1
    assert waiting.metadata["detail"].value == {"oldest_file": "a.csv"}
    assert waiting.metadata["oldest_waiting_seconds"].value >= 3600
    assert not waiting.passed  # a file per batch, so an hour is late

    first = tick(defs, instance)  # the sensor watches it settle for itself
    time.sleep(1.1)
    (key,) = keys(tick(defs, instance, first.cursor))
    assert _lag(defs, instance).metadata["waiting_files"].value == 1  # cut, not landed yet
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    landed = _lag(defs, instance)
    assert (landed.passed, landed.metadata["waiting_files"].value) == (True, 0)


def test_the_lag_sees_a_sensor_that_never_cuts(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inbox flip-flop reintroduced behind a test double: no file is ever complete to the
    # sensor, so it never cuts and every tick skips.
    def never_complete(uncut, names, rules, settle, cursor, now):  # type: ignore[no-untyped-def]
        cursor.settling = {e.path: [e.size, e.mtime, now] for e in uncut}
        return []

    monkeypatch.setattr(file_sensor, "stable_files", never_complete)
    defs = _defs(tmp_path, inbox, settle="1s", batch={"files": 5, "max_wait": "2s"})
    dropped = inbox / "dropped.csv"
    dropped.write_text("id\n1\n")
    # Copied in ten minutes ago (a lag check's grace is at least five).
    old = time.time() - 600
    os.utime(dropped, (old, old))
    cursor, ages = None, []
    for _ in range(3):
        result = tick(defs, instance, cursor)
        assert keys(result) == []
        cursor = result.cursor
        evaluation = _lag(defs, instance)
        assert (evaluation.passed, evaluation.metadata["waiting_files"].value) == (False, 1)
        ages.append(evaluation.metadata["oldest_waiting_seconds"].value)
        time.sleep(0.5)

    assert ages == sorted(set(ages)) and ages[0] >= 600  # the same file, older each time
    assert evaluation.metadata["detail"].value == {"oldest_file": "dropped.csv"}
    assert evaluation.description.startswith("1 files wait at the source; the oldest for 0:10:")


def test_files_wait_while_a_run_of_the_sensor_waits_then_land_in_one_partition(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, inbox, settle="0s")
    (inbox / "a.csv").write_text("id\n1\n")
    first = tick(defs, instance, status=dg.DagsterRunStatus.NOT_STARTED)
    assert [key.split("@")[0] for key in keys(first)] == ["a.csv"]
    sensor_name = files_sensor(defs).name
    assert first.run_requests[0].tags["ingestion_platform/stream"] == sensor_name.removesuffix(
        "__sensor"
    )

    for name in ("b.csv", "c.csv"):
        (inbox / name).write_text("id\n2\n")
    held = tick(defs, instance, first.cursor)
    assert keys(held) == []
    assert held.skip_reason is not None
    assert held.skip_reason.skip_message.startswith(
        f"{sensor_name.removesuffix('__sensor')}: holding new cuts while 1 run(s) of it wait "
        "to start; what is pending then lands in one run; no new partition: 2 complete file(s)"
    )
    start_only_run(instance)
    after = tick(defs, instance, held.cursor)
    assert [key.split("@")[0] for key in keys(after)] == ["b.csv+1"]
