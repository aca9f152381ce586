"""SFTP and SCP sources against a real OpenSSH sshd on loopback: keys, names, landing, retry.

Tests marked `BOTH_SFTP_SERVERS` run against asyncssh's SFTP server too, a second implementation
(its listing, attributes and reads are its own).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import SftpFileSource
from ingestion_platform.sources.files.connectors.entries import UnsafeName
from ingestion_platform_tests.files_helpers import keys, rows, tick
from ingestion_platform_tests.sources import build_source, failure_message, materialize
from ingestion_platform_tests.sshd import BOTH_SFTP_SERVERS, Sshd, ThrottledProxy, keygen


def _defs(tmp_path: Path, server: Sshd, **extra: object) -> dg.Definitions:
    attributes = server.attributes(**{"table": "orders", "settle": "0s", **extra})
    return build_source(SftpFileSource, tmp_path / "partner", attributes)


@BOTH_SFTP_SERVERS
def test_new_files_are_picked_up_once_and_land(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (sshd.root / "orders_1.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    (sshd.root / "orders_2.csv.filepart").write_text("id,amount\n3,1\n")
    (sshd.root / "sub").mkdir()
    (sshd.root / "sub" / "orders_3.csv").write_text("id,amount\n4,1\n")
    defs = _defs(tmp_path, sshd, patterns=["orders_*.csv"], recursive=True)
    first = tick(defs, instance)
    # Both complete at once: one partition holds them (core/backlog.py).
    assert [k.split("@")[0] for k in keys(first)] == ["orders_1.csv+1"]
    assert keys(tick(defs, instance, first.cursor)) == []
    (key,) = keys(first)
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _file, _row from partner.orders order by id") == [
        (1, "orders_1.csv", 1),
        (2, "orders_1.csv", 2),
        (4, "sub/orders_3.csv", 1),
    ]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["bytes_transferred"].value == sum(f["size"] for f in metadata["files"].value)
    assert sorted(f["size"] for f in metadata["files"].value) == [14, 22]
    assert metadata["transfer_mb_per_s"].value >= 0


@BOTH_SFTP_SERVERS
def test_temp_name_upload_is_taken_only_after_the_rename(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, sshd)
    part = sshd.root / "drop.csv.part"
    part.write_text("id\n1\n")
    assert keys(tick(defs, instance)) == []
    part.rename(sshd.root / "drop.csv")
    assert [k.split("@")[0] for k in keys(tick(defs, instance))] == ["drop.csv"]


@BOTH_SFTP_SERVERS
def test_slowly_written_file_waits_for_settle_and_marker_mode_for_the_marker(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    defs = _defs(tmp_path, sshd, settle="1s")
    slow = sshd.root / "slow.csv"
    slow.write_text("id\n1\n")
    cursor = tick(defs, instance).cursor
    for value in range(2, 5):  # still being written: never taken
        with slow.open("a") as out:
            out.write(f"{value}\n")
        result = tick(defs, instance, cursor)
        assert keys(result) == []
        cursor = result.cursor
        time.sleep(0.6)
    time.sleep(1.1)
    assert [k.split("@")[0] for k in keys(tick(defs, instance, cursor))] == ["slow.csv"]

    marked = build_source(SftpFileSource, tmp_path / "marked", sshd.attributes(done_marker=".done"))
    (sshd.root / "m.csv").write_text("id\n1\n")
    assert keys(tick(marked, instance)) == [k for k in [] if k]  # slow.csv has no marker
    (sshd.root / "m.csv.done").write_text("")
    assert [k.split("@")[0] for k in keys(tick(marked, instance))] == ["m.csv"]


def test_a_server_that_is_down_fails_the_tick_naming_the_source_and_the_fix(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    sshd.stop()
    with pytest.raises(SourceFailure) as refused:
        tick(_defs(tmp_path, sshd), instance)
    assert str(refused.value) == (
        f"source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}): cannot reach "
        f"127.0.0.1:{sshd.port}: connection refused. Fix: check that the server is up and that "
        "`host` and `port` point at it"
    )


@BOTH_SFTP_SERVERS
def test_unknown_or_changed_host_key_is_refused_with_the_key_seen(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance
) -> None:
    other = keygen(tmp_path / "other_host_key")
    defs = _defs(tmp_path, sshd, host_key=other)
    with pytest.raises(SourceFailure) as refused:
        tick(defs, instance)
    message = str(refused.value)
    assert message.startswith(
        f"source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}): host key of "
        f"127.0.0.1:{sshd.port} is not the one in host_key"
    )
    assert f'pin the new one: host_key: "{sshd.host_key_line}"' in message

    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    attributes = sshd.attributes(table="orders", known_hosts=str(known))
    del attributes["host_key"]
    with pytest.raises(SourceFailure, match=r"is not the one in known_hosts"):
        tick(build_source(SftpFileSource, tmp_path / "kh", attributes), instance)

    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    assert keys(tick(build_source(SftpFileSource, tmp_path / "kh", attributes), instance)) == []


def test_skipping_the_host_key_check_works_only_when_asked_and_warns_every_tick_and_run(
    tmp_path: Path,
    sshd: Sshd,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (sshd.root / "a.csv").write_text("id\n1\n")
    attributes = sshd.attributes(table="orders", settle="0s", insecure_skip_host_key_check=True)
    del attributes["host_key"]
    defs = build_source(SftpFileSource, tmp_path / "partner", attributes)
    warning = (
        f"{tmp_path / 'partner' / 'defs.yaml'}: insecure_skip_host_key_check is on: the "
        f"identity of 127.0.0.1:{sshd.port} is NOT verified; pin host_key to fix"
    )
    capfd.readouterr()
    (key,) = keys(tick(defs, instance))
    tick_log = capfd.readouterr().err.splitlines()
    assert [line.split(" - WARNING - ")[-1] for line in tick_log if "WARNING" in line] == [warning]
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _file from partner.orders") == [(1, "a.csv")]
    warned = [
        e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING
    ]
    assert warned == [warning]


@BOTH_SFTP_SERVERS
def test_traversal_and_symlinks_out_of_the_folder_are_refused_and_reported_once(
    tmp_path: Path,
    sshd: Sshd,
    instance: dg.DagsterInstance,
    resources: dict,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("id\n1\n")
    os.symlink(secret, sshd.root / "escape.csv")
    (sshd.root / "bad\nname.csv").write_text("id\n1\n")
    (sshd.root / "inside_target.csv").write_text("id\n2\n")
    os.symlink(sshd.root / "inside_target.csv", sshd.root / "inside_link.csv")
    defs = _defs(tmp_path, sshd)
    capfd.readouterr()
    first = tick(defs, instance)
    # The two files inside, in one partition (several at once are one; core/backlog.py).
    assert [k.split("@")[0] for k in keys(first)] == ["inside_link.csv+1"]
    refused_logs = [line.split(" - WARNING - ")[1] for line in _refused_lines(capfd)]
    assert refused_logs == [
        "partner: refused 'bad\\nname.csv': its name contains a NUL or newline character",
        "partner: refused 'escape.csv': it is a symlink pointing out of the folder",
    ]
    assert {r.tags["ingestion_platform/refused_names"] for r in first.run_requests} == {"2"}
    request = first.run_requests[0]  # launched with the request's tags, as the daemon does
    result = materialize(
        defs,
        partition_key=request.partition_key,
        resources=resources,
        instance=instance,
        tags=dict(request.tags),
    )
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["refused_names"].value == 2
    capfd.readouterr()
    second = tick(defs, instance, first.cursor)
    assert _refused_lines(capfd) == []  # each name is warned about once, not every tick
    assert second.skip_reason is not None
    assert second.skip_reason.skip_message == (
        "no new partition: 0 complete file(s) not yet cut, 0 settling; 2 unsafe name(s) "
        "refused, e.g. 'bad\\nname.csv'"
    )
    component = SftpFileSource.resolve_from_yaml(yaml.safe_dump(sshd.attributes()))
    files = component.open_files(SourceContext("partner", "defs.yaml"))
    try:
        assert files.list(recursive=False).refused == {
            "escape.csv": "it is a symlink pointing out of the folder",
            "bad\nname.csv": "its name contains a NUL or newline character",
        }
        with pytest.raises(UnsafeName, match=r"refused '../secret.csv': its name contains '..'"):
            files.stat("../secret.csv")
    finally:
        files.close()


def _refused_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if ": refused '" in line]


@BOTH_SFTP_SERVERS
def test_replay_replaces_rows_then_archive_moves_after_commit_and_replay_follows(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (sshd.root / "a.csv").write_text("id\n1\n2\n")
    defs = _defs(tmp_path, sshd, after_landing="archive")
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert not (sshd.root / "a.csv").exists()
    (archived,) = (sshd.root / ".archive").iterdir()  # a.csv.<mtime>-<version>
    assert archived.name.startswith("a.csv.") and archived.read_text() == "id\n1\n2\n"
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert warehouse.count("partner", "orders", batch=key) == 2
    files = result.get_asset_materialization_events()[0].materialization.metadata["files"]
    assert files.value[0]["archived_to"] == f".archive/{archived.name}"
    assert keys(tick(defs, instance)) == []  # the archive is never listed as new

    # A bad file fails the run before anything moves: the file stays where it was.
    (sshd.root / "b.csv.gz").write_bytes(b"not gzip at all")
    failing = _defs(tmp_path / "f", sshd, after_landing="archive", on_bad_file="fail")
    (bad_key,) = keys(tick(failing, instance))
    failed = materialize(
        failing,
        partition_key=bad_key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert "b.csv.gz is not a complete gzip file" in failure_message(failed)
    assert (sshd.root / "b.csv.gz").exists()


def test_connection_dropped_mid_transfer_resumes_from_the_staged_bytes_and_lands_once(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    body = "".join(f"{i},{'x' * 90}\n" for i in range(400_000))
    (sshd.root / "big.csv").write_text("id,pad\n" + body)
    size = (sshd.root / "big.csv").stat().st_size
    defs = _defs(tmp_path, sshd)
    (key,) = keys(tick(defs, instance))
    staging = warehouse.path.parent / ".staging"
    dropped = threading.Event()
    staged_at_drop = []

    def drop_the_connection() -> None:
        # Kill the per-connection sshd child once a staged file starts growing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not dropped.is_set():
            staged = [p for p in staging.rglob("*big.csv") if p.stat().st_size > 1_000_000]
            if staged:
                children = os.popen(f"pgrep -P {sshd.process.pid}").read().split()
                for child in children:
                    os.kill(int(child), 9)
                staged_at_drop.append(staged[0].stat().st_size)
                dropped.set()
            time.sleep(0.01)

    killer = threading.Thread(target=drop_the_connection)
    killer.start()
    result = materialize(defs, partition_key=key, resources=resources, instance=instance)
    killer.join()
    assert dropped.is_set()
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    # The second attempt went on from the good bytes already staged, not from byte 0.
    assert 0 < metadata["resumed_from_bytes"].value < size
    assert metadata["bytes_transferred"].value == size
    assert warehouse.count("partner", "orders", batch=key) == 400_000
    assert rows(
        warehouse, "select count(distinct id), min(id), max(id), max(_row) from partner.orders"
    ) == [(400_000, 0, 399_999, 400_000)]
    assert rows(warehouse, "select count(*) from partner.orders where pad <> ?", "x" * 90) == [(0,)]


@BOTH_SFTP_SERVERS
def test_a_file_changed_between_attempts_is_never_spliced(
    tmp_path: Path, sshd: Sshd, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    big = sshd.root / "big.csv"
    big.write_text("id,pad\n" + "".join(f"{i},{'x' * 90}\n" for i in range(100_000)))
    listed = big.stat()
    proxy = ThrottledProxy(sshd.port, rate=2e6)
    defs = _defs(tmp_path, sshd, port=proxy.port)
    (key,) = keys(tick(defs, instance))
    staging = warehouse.path.parent / ".staging"

    def rewrite_after_a_drop() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if [p for p in staging.rglob("*big.csv") if p.stat().st_size > 200_000]:
                proxy.drop()  # the retry waits a second before reconnecting
                with big.open("a") as out:
                    out.write("100000,late\n")
                return
            time.sleep(0.01)

    changer = threading.Thread(target=rewrite_after_a_drop)
    changer.start()
    try:
        failed = materialize(
            defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
        )
    finally:
        changer.join()
        proxy.close()
    message = failure_message(failed)
    assert (
        "ChangedDuringTransfer: big.csv changed during the transfer (resuming at byte " in message
    )
    assert (
        f"listed with size {listed.st_size:,} and mtime {int(listed.st_mtime)}, "
        f"now size {listed.st_size + 12:,} and mtime {int(big.stat().st_mtime)}"
    ) in message
    assert not warehouse.table_exists("partner", "orders")


def test_scp_only_server_lists_fetches_and_archives(
    tmp_path: Path, scp_sshd: Sshd, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    (scp_sshd.root / "p.csv").write_text("id,name\n1,a\n2,b\n")
    (scp_sshd.root / "p.csv.part").write_text("id,name\n3,c\n")
    defs = _defs(tmp_path, scp_sshd, transport="scp", after_landing="archive")
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, name, _file from partner.orders order by id") == [
        (1, "a", "p.csv"),
        (2, "b", "p.csv"),
    ]
    assert [p.name[:6] for p in (scp_sshd.root / ".archive").iterdir()] == ["p.csv."]
    materialize(defs, partition_key=key, resources=resources, instance=instance)  # replay
    assert warehouse.count("partner", "orders", batch=key) == 2


def test_scp_refuses_a_symlink_whose_chain_leaves_the_folder_as_sftp_does(
    tmp_path: Path,
    sshd: Sshd,
    scp_sshd: Sshd,  # serves the same folder, without SFTP
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources: dict,
    capfd: pytest.CaptureFixture[str],
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "orders_good.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(1000)))
    root = scp_sshd.root
    os.symlink(outside, root / "sub")  # a folder link out of the watched folder
    os.symlink("sub/orders_good.csv", root / "chain.csv")  # whose text looks inside
    (root / "own.csv").write_text("id\n1\n")
    (root / "inner").mkdir()
    (root / "inner" / "x.csv").write_text("id\n2\n")
    os.symlink("inner/x.csv", root / "inner_link.csv")
    refused = {
        "chain.csv": "it is a symlink pointing out of the folder",
        "sub": "it is a symlink pointing out of the folder",
    }
    for transport, server in (("scp", scp_sshd), ("sftp", sshd)):
        component = SftpFileSource.resolve_from_yaml(
            yaml.safe_dump(server.attributes(transport=transport))
        )
        files = component.open_files(SourceContext("partner", "defs.yaml"))
        try:
            listing = files.list(recursive=True)
            assert listing.refused == refused, transport
            assert sorted(f.path for f in listing.files) == [
                "inner/x.csv", "inner_link.csv", "own.csv"
            ], transport  # fmt: skip
            assert files.stat("chain.csv") is None  # a replay cannot reach it either
        finally:
            files.close()

    defs = _defs(tmp_path, scp_sshd, transport="scp", batch={"files": 10, "max_wait": "0s"})
    capfd.readouterr()
    first = tick(defs, instance)
    assert sorted(line.split(" - WARNING - ")[1] for line in _refused_lines(capfd)) == [
        "partner: refused 'chain.csv': it is a symlink pointing out of the folder",
        "partner: refused 'sub': it is a symlink pointing out of the folder",
    ]
    (key,) = keys(first)
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _file from partner.orders order by id") == [
        (1, "own.csv"),
        (2, "inner_link.csv"),
    ]


@pytest.mark.parametrize("transport", ["sftp", "scp"])
def test_a_stalled_transfer_fails_naming_the_source_within_transfer_timeout(
    tmp_path: Path,
    transport: str,
    request: pytest.FixtureRequest,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources,
) -> None:
    server: Sshd = request.getfixturevalue("sshd" if transport == "sftp" else "scp_sshd")
    big = server.root / "big.csv"
    big.write_text("id,pad\n" + "".join(f"{i},{'x' * 90}\n" for i in range(100_000)))
    proxy = ThrottledProxy(server.port, rate=2e6)
    defs = _defs(tmp_path, server, port=proxy.port, transfer_timeout="1s", transport=transport)
    (key,) = keys(tick(defs, instance))
    staging = warehouse.path.parent / ".staging"

    def stall_once_data_flows() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if [p for p in staging.rglob("*big.csv") if p.stat().st_size > 100_000]:
                proxy.stall()  # the partner stops sending, the connection stays open
                return
            time.sleep(0.01)

    staller = threading.Thread(target=stall_once_data_flows)
    staller.start()
    try:
        failed = materialize(
            defs, partition_key=key, resources=resources, instance=instance, raise_on_error=False
        )
    finally:
        staller.join()
        proxy.close()
    assert failure_message(failed) == (
        "ingestion_platform.core.declaration.SourceFailure: source 'partner' "
        f"({tmp_path / 'partner' / 'defs.yaml'}): downloading big.csv stalled: no data for 1s. "
        "Fix: check the server and the network, or raise transfer_timeout if it is only slow"
    )
    assert not warehouse.table_exists("partner", "orders")


def test_the_file_asset_holds_no_warehouse_pool_slot_while_it_transfers(
    tmp_path: Path, sshd: Sshd
) -> None:
    (asset,) = list(_defs(tmp_path, sshd).assets or [])
    assert isinstance(asset, dg.AssetsDefinition) and asset.op.pool is None


@BOTH_SFTP_SERVERS
def test_a_listing_the_server_never_answers_fails_as_a_stall_not_a_hang(
    tmp_path: Path, sshd: Sshd
) -> None:
    proxy = ThrottledProxy(sshd.port)
    attributes = sshd.attributes(port=proxy.port, transfer_timeout="1s")
    component = SftpFileSource.resolve_from_yaml(yaml.safe_dump(attributes))
    files = component.open_files(SourceContext("partner", "defs.yaml"))
    try:
        proxy.stall()
        with pytest.raises(ConnectionError) as stalled:
            files.list(recursive=False)
    finally:
        proxy.close()
        files.close()
    assert str(stalled.value) == (
        f"the server answered nothing for 1s (list in {sshd.root}). Fix: check the server and "
        "the network, or raise transfer_timeout if it is only slow"
    )
