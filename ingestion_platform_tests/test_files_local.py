"""The local inbox: stability rules, batches, formats, quarantine and replay, on real files."""

from __future__ import annotations

import functools
import gzip
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.declaration import DeclarationError
from ingestion_platform.core.warehouse import Warehouse, WarehouseResource
from ingestion_platform_tests.conftest import WAREHOUSE_KIND
from ingestion_platform_tests.files_helpers import keys, local_source, rows, tick
from ingestion_platform_tests.sources import failure_message, materialize

# Files here are whole once written: taken at once unless a test sets `settle`.
_defs = functools.partial(local_source, settle="0s")


def test_each_new_file_is_cut_once_and_lands_with_file_and_row(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "orders_1.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    (inbox / "orders_1.csv.part").write_text("id,amount\n9,9\n")
    defs = _defs(tmp_path, inbox, patterns=["orders_*.csv"])
    first = tick(defs, instance)
    (key,) = keys(first)
    assert key.startswith("orders_1.csv@")
    assert keys(tick(defs, instance, first.cursor)) == []  # never twice

    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, amount, _file, _row, _batch_key from inbox.orders") == [
        (1, 2.5, "orders_1.csv", 1, key),
        (2, 3.5, "orders_1.csv", 2, key),
    ]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_read"].value == 2
    assert metadata["rows_quarantined"].value == 0


def test_a_file_still_changing_is_not_taken_until_it_settles(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, inbox, settle="1s")
    growing = inbox / "slow.csv"
    growing.write_text("id\n1\n")
    first = tick(defs, instance)
    assert keys(first) == []
    with growing.open("a") as out:
        out.write("2\n")
    second = tick(defs, instance, first.cursor)
    assert keys(second) == []  # changed since the last look: the settle time starts again
    time.sleep(1.1)
    third = tick(defs, instance, second.cursor)
    assert [k.split("@")[0] for k in keys(third)] == ["slow.csv"]


def test_done_marker_mode_waits_for_the_marker(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, inbox, done_marker=".done")
    (inbox / "a.csv").write_text("id\n1\n")
    assert keys(tick(defs, instance)) == []
    (inbox / "a.csv.done").write_text("")
    assert [k.split("@")[0] for k in keys(tick(defs, instance))] == ["a.csv"]


def test_changed_file_is_a_new_version_and_old_partition_replay_fails(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    defs = _defs(tmp_path, inbox)
    target = inbox / "orders_0412.csv"
    target.write_text("id\n1\n2\n")
    (old,) = keys(tick(defs, instance))
    materialize(defs, partition_key=old, resources=resources, instance=instance)
    materialize(defs, partition_key=old, resources=resources, instance=instance)  # replay
    assert warehouse.count("inbox", "orders", batch=old) == 2

    target.write_text("id\n1\n2\n3\n")
    os.utime(target, (1_700_000_000, 1_700_000_000))  # older mtime than before: still seen
    (new,) = keys(tick(defs, instance))
    assert new != old
    materialize(defs, partition_key=new, resources=resources, instance=instance)
    assert warehouse.count("inbox", "orders", batch=new) == 3

    failed = materialize(
        defs, partition_key=old, resources=resources, instance=instance, raise_on_error=False
    )
    assert "orders_0412.csv changed since it was landed (size 7 → 9, mtime " in failure_message(
        failed
    )
    assert warehouse.count("inbox", "orders", batch=old) == 2  # left as it was


def test_bad_rows_are_quarantined_and_counts_reconcile(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "mixed.csv").write_text("id,amount\n1,1.5\n2,oops\n3,2\n4\n5,3,extra\n6,4\n")
    defs = _defs(tmp_path, inbox, columns={"id": "BIGINT", "amount": "DOUBLE"})
    (key,) = keys(tick(defs, instance))
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _row from inbox.orders order by id") == [
        (1, 1),
        (3, 3),
        (6, 6),
    ]
    assert rows(
        warehouse, "select file, line, column_name, raw_value from inbox._quarantine order by line"
    ) == [
        ("mixed.csv", 3, "amount", "2,oops"),
        ("mixed.csv", 5, "amount", "4"),
        ("mixed.csv", 6, None, "5,3,extra"),
    ]
    (reason,) = rows(warehouse, "select reason from inbox._quarantine where line = 3")[0]
    assert "Could not convert string \"oops\" to 'DOUBLE'" in reason
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["rows_read"].value, metadata["rows_landed"].value) == (6, 3)
    assert metadata["rows_quarantined"].value == 3


def test_formats_land_exact_values(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.jsonl").write_text(
        '{"id": 1, "name": "x"}\n{"id": 2,\n\n{"id": 3, "extra": true}\n'
    )
    with gzip.open(inbox / "b.csv.gz", "wt") as out:
        out.write("id,name\n4,y\n")
    (inbox / "c.csv").write_bytes("id;name\n5;caf\xe9\n".encode("latin-1"))
    (inbox / "empty.csv").write_text("")
    (inbox / "header_only.csv").write_text("id,name\n")
    # Cut in the middle: DuckDB would read the first half without a word.
    whole = gzip.compress(b"id,name\n" + b"".join(b"%d,z%d\n" % (i, i * 7) for i in range(5000)))
    (inbox / "broken.csv.gz").write_bytes(whole[: len(whole) // 2])
    for index, name in enumerate(sorted(os.listdir(inbox))):
        os.utime(inbox / name, (1_700_000_000 + index, 1_700_000_000 + index))
    defs = _defs(tmp_path, inbox, excludes=["c.csv"], batch={"files": 10, "max_wait": "0s"})
    (key,) = keys(tick(defs, instance))  # 5 files: a partial batch, cut once max_wait passed
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_by_file"].value["empty.csv"] == 0
    assert metadata["rows_by_file"].value["header_only.csv"] == 0
    assert list(metadata["bad_files"].value) == ["broken.csv.gz"]
    assert rows(
        warehouse,
        "select id, name, extra, _file, _row from inbox.orders where _file <> 'c.csv' order by id",
    ) == [
        (1, "x", None, "a.jsonl", 1),
        (3, None, True, "a.jsonl", 4),
        (4, "y", None, "b.csv.gz", 1),
    ]
    # The broken JSON line, and the truncated file (its records cannot be told: it counts 1).
    assert metadata["rows_quarantined"].value == 2
    assert metadata["new_columns"].value == []  # the first landing creates, it does not drift

    latin = _defs(tmp_path / "l", inbox, patterns=["c.csv"], delimiter=";", encoding="latin-1")
    (latin_key,) = keys(tick(latin, instance))
    materialize(latin, partition_key=latin_key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, name from inbox.orders where _file = 'c.csv'") == [
        (5, "café")
    ]


def test_recursive_listing_never_takes_archived_files_again(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "day1").mkdir()
    (inbox / "day1" / "a.csv").write_text("id\n1\n")
    defs = _defs(tmp_path, inbox, recursive=True, after_landing="archive")
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert [p.name.split(".")[:2] for p in (inbox / ".archive" / "day1").iterdir()] == [
        ["a", "csv"]
    ]
    assert keys(tick(defs, instance)) == []
    assert warehouse.count("inbox", "orders") == 1


def test_a_named_archive_folder_is_never_listed_again_either(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    # Only dot-folders were skipped: a recursive listing took `done/…/a.csv.<stamp>` as a
    # new file, landed its rows a second time, then archived it into `done/done/…`.
    (inbox / "day1").mkdir()
    (inbox / "day1" / "a.csv").write_text("id\n1\n2\n")
    defs = local_source(
        tmp_path,
        inbox,
        settle="1s",  # as users set it: a file is taken on the look after it settled
        recursive=True,
        format="csv",
        after_landing="archive",
        archive_folder="done/",
    )

    def settled_keys(cursor: str | None) -> tuple[list[str], str | None]:
        seen = tick(defs, instance, cursor)
        time.sleep(1.1)
        settled = tick(defs, instance, seen.cursor)
        return keys(seen) + keys(settled), settled.cursor

    (key,), cursor = settled_keys(None)
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    (archived,) = (inbox / "done" / "day1").iterdir()
    assert archived.name.startswith("a.csv.")
    assert settled_keys(cursor)[0] == []
    assert rows(warehouse, "select id from inbox.orders order by id") == [(1,), (2,)]
    # A file of the same name outside the archive is still taken.
    (inbox / "day2" / "done").mkdir(parents=True)
    (inbox / "day2" / "done" / "b.csv").write_text("id\n3\n")
    assert [k.split("@")[0] for k in settled_keys(cursor)[0]] == ["day2_done_b.csv"]


def test_own_temp_suffixes_replace_the_default_ones(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (inbox / "a.csv.uploading").write_text("id\n1\n")
    (inbox / "b.csv.part").write_text("id\n2\n")
    (inbox / "c.csv").write_text("id\n3\n")
    defs = _defs(tmp_path, inbox, format="csv", temp_suffixes=[".uploading"])
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select _file, id from inbox.orders order by id") == [
        ("b.csv.part", 2),
        ("c.csv", 3),
    ]


def test_an_empty_temp_suffix_or_done_marker_is_refused(tmp_path: Path, inbox: Path) -> None:
    # Every name ends with "": either setting would silently hide every file.
    defs_file = tmp_path / "inbox" / "defs.yaml"
    with pytest.raises(DeclarationError) as error:
        _defs(tmp_path, inbox, temp_suffixes=[".part", ""])
    assert str(error.value) == (
        f"{defs_file}: temp_suffixes: holds an empty ending, which every name has, so no file "
        "would ever be taken. Fix: list the endings of names still being written, e.g. "
        "temp_suffixes: [.part]."
    )
    with pytest.raises(DeclarationError) as error:
        _defs(tmp_path, inbox, done_marker="")
    assert str(error.value) == (
        f"{defs_file}: done_marker: is empty, so every file would count as a marker and none "
        "would be taken. Fix: name the marker's ending, e.g. done_marker: .done, or remove "
        "the setting."
    )


def test_an_archive_folder_outside_the_watched_folder_or_at_its_root_is_refused(
    tmp_path: Path, inbox: Path
) -> None:
    # Every transport archives relative to `path`: `/srv/done` became `<path>/srv/done`.
    for folder in ("/srv/done", "../done"):
        with pytest.raises(DeclarationError) as error:
            _defs(tmp_path, inbox, after_landing="archive", archive_folder=folder)
        assert str(error.value) == (
            f"{tmp_path / 'inbox' / 'defs.yaml'}: archive_folder: {folder!r} is not inside the "
            "watched folder (files are archived relative to `path`). Fix: name a folder inside "
            "it, e.g. archive_folder: .archive."
        )
    with pytest.raises(DeclarationError) as error:
        _defs(tmp_path, inbox, after_landing="archive", archive_folder="./")
    assert str(error.value) == (
        f"{tmp_path / 'inbox' / 'defs.yaml'}: archive_folder: './' is the watched folder itself, "
        "where archived copies would be taken as new files. Fix: name a folder inside it, e.g. "
        "archive_folder: .archive."
    )


def test_the_first_landing_is_not_schema_drift_and_a_later_new_column_is(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, resources
) -> None:
    (inbox / "a.csv").write_text("id,name\n1,x\n")
    defs = _defs(tmp_path, inbox)
    (first,) = keys(tick(defs, instance))
    created = materialize(defs, partition_key=first, resources=resources, instance=instance)
    metadata = created.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["schema_changed"].value, metadata["new_columns"].value) == (False, [])
    assert all(e.passed for e in created.get_asset_check_evaluations())

    (inbox / "b.csv").write_text("id,name,city\n2,y,Oslo\n")
    (second,) = keys(tick(defs, instance))
    grown = materialize(defs, partition_key=second, resources=resources, instance=instance)
    metadata = grown.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["schema_changed"].value, metadata["new_columns"].value) == (True, ["city"])


def test_a_re_uploaded_file_is_archived_beside_the_first_and_the_first_replays_exactly(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    defs = _defs(tmp_path, inbox, after_landing="archive")
    (inbox / "a1.csv").write_text("id,amount\n1,10\n2,20\n")
    os.utime(inbox / "a1.csv", (1_700_000_000, 1_700_000_000))
    (first,) = keys(tick(defs, instance))
    materialize(defs, partition_key=first, resources=resources, instance=instance)
    (inbox / "a1.csv").write_text("id,amount\n1,11\n2,21\n3,31\n")  # the partner's fix
    (second,) = keys(tick(defs, instance))
    materialize(defs, partition_key=second, resources=resources, instance=instance)
    archived = sorted(p.name for p in (inbox / ".archive").iterdir())
    assert len(archived) == 2 and all(name.startswith("a1.csv.") for name in archived)
    assert "a1.csv.20231114T221320Z-" in archived[0]

    replay = materialize(defs, partition_key=first, resources=resources, instance=instance)
    assert replay.success
    assert rows(warehouse, "select _batch_key = ?, id, amount from inbox.orders order by 1, 2",
                first) == [(False, 1, 11), (False, 2, 21), (False, 3, 31),
                           (True, 1, 10), (True, 2, 20)]  # fmt: skip


def test_a_source_named_like_the_warehouse_file_is_refused_with_the_fix(
    tmp_path: Path, inbox: Path, instance: dg.DagsterInstance
) -> None:
    """DuckDB names a file's own catalog after the file: with a source `inbox` landing into
    inbox.duckdb, every `inbox.<table>` would fail as ambiguous, in DuckDB's words only."""
    (inbox / "orders_1.csv").write_text("id\n1\n")
    defs = _defs(tmp_path, inbox)
    (key,) = keys(tick(defs, instance))
    path = tmp_path / "Inbox.duckdb"
    resources = {"warehouse": WarehouseResource(path=str(path))}
    result = materialize(
        defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
    )
    if WAREHOUSE_KIND == "ducklake":  # the lake's catalog has a name of the platform's own
        assert result.success
        return
    assert failure_message(result) == (
        "ingestion_platform.core.warehouse.DatasetNamedLikeWarehouse: source 'inbox' has the "
        "name of the warehouse file Inbox.duckdb: DuckDB calls the file's own catalog "
        "'Inbox' too, and refuses every inbox.<table> as ambiguous. Nothing was landed. Fix: "
        f"rename the warehouse file (INGESTION_WAREHOUSE_PATH, now {path}) or the source's "
        "folder"
    )
    assert not Warehouse(path).table_exists("inbox", "orders")
