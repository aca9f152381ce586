"""File sources side by side, on a loopback OpenSSH sshd: transfer engines and a whole landing.

    .venv/bin/python -m bench.files [--rows 2000000] [--listing 10000]

Transfers, `--rounds` alternating rounds, medians: (a) OpenSSH `sftp` get with its defaults;
(a2) OpenSSH `sftp` with a larger buffer and more requests in flight (`-B 262144 -R 256`);
(c) the platform's transfer (SftpFiles.fetch: asyncssh), compared with the better of (a)
and (a2). Once: (b) paramiko SFTPClient.get. File → table, alternating rounds: (d) the
platform's whole materialisation, file → DuckDB table; (e) OpenSSH get, with the settings of
(a) or (a2), whichever was faster, + DuckDB read_csv of the local file into a table. Then
the sensor's tick time over a folder of `--listing` files. The load average is printed with
the figures. Figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import paramiko

from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.slot_guard import freeze_start_up_heap
from ingestion_platform.sources.files.component import SftpFileSource
from ingestion_platform.sources.files.connectors.entries import FileEntry
from ingestion_platform.sources.files.connectors.sftp import SftpFiles
from ingestion_platform.sources.files.connectors.ssh import SshSettings
from ingestion_platform_tests.files_helpers import keys, tick
from ingestion_platform_tests.sources import build_source
from ingestion_platform_tests.sshd import start_sshd


def make_csv(path: Path, rows: int) -> None:
    query = (
        "copy (select i as id, 'customer_' || (i % 5000) as customer, "  # noqa: S608
        "(i * 7 % 100000) / 100.0 "
        "as amount, timestamp '2026-01-01' + i * interval 1 second as created_at, "
        "md5(i::varchar) || md5((i + 1)::varchar) as note, md5((i + 3)::varchar) as ref, "
        f"i % 17 as qty from range(1, {rows + 1}) t(i)) to '{path}' (header)"
    )
    duckdb.sql(query)


def timed(label: str, size: int, action) -> float:
    """Seconds `action` took, or the seconds it returns (an action timing only its own part)."""
    started = time.monotonic()
    own = action()
    seconds = own if isinstance(own, float) else time.monotonic() - started
    print(f"{label:<55} {seconds:7.2f} s  {size / 1e6 / seconds:7.0f} MB/s")
    return seconds


def _alternate(actions: dict[str, Any], size: int, rounds: int) -> dict[str, float]:
    """Each action once per round, in turn; prints every time and returns the medians."""
    times: dict[str, list[float]] = {label: [] for label in actions}
    for round_number in range(1, rounds + 1):
        for label, action in actions.items():
            times[label].append(timed(f"round {round_number} {label}", size, action))
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, seconds in medians.items():
        print(f"{'median ' + label:<55} {seconds:7.2f} s  {size / 1e6 / seconds:7.0f} MB/s")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--listing", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="bench-files-"))
    remote = work / "remote"
    remote.mkdir()
    source_file = remote / "orders.csv"
    make_csv(source_file, args.rows)
    size = source_file.stat().st_size
    print(f"{source_file.name}: {size / 1e6:.0f} MB, {args.rows:,} rows")
    server = start_sshd(work / "sshd", remote)
    key = str(server.user_key)
    try:
        openssh = [
            "sftp", "-q", "-i", key, "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-P", str(server.port),
        ]  # fmt: skip
        remote_file = f"{server.user}@127.0.0.1:{source_file}"
        larger = ["-B", "262144", "-R", "256"]
        settings = SshSettings(
            "127.0.0.1",
            server.port,
            server.user,
            private_key=Path(key).read_text(),
            host_key=server.host_key_line,
        )
        entry = FileEntry("orders.csv", size, source_file.stat().st_mtime)

        def platform_fetch() -> None:
            files = SftpFiles(settings, str(remote))
            try:
                files.fetch([(entry, str(work / "c.csv"))], lambda *_: None)
            finally:
                files.close()

        transfers = {
            "(a) OpenSSH sftp get, defaults": lambda: subprocess.run(
                [*openssh, remote_file, str(work / "a.csv")], check=True
            ),
            "(a2) OpenSSH sftp get, -B 262144 -R 256": lambda: subprocess.run(
                [*openssh, *larger, remote_file, str(work / "a2.csv")], check=True
            ),
            "(c) platform transfer (asyncssh)": platform_fetch,
        }
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        medians = _alternate(transfers, size, args.rounds)

        def paramiko_get() -> None:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # bench only, loopback
            client.connect("127.0.0.1", server.port, server.user, key_filename=key,
                           look_for_keys=False, allow_agent=False)  # fmt: skip
            client.open_sftp().get(str(source_file), str(work / "b.csv"))
            client.close()

        timed("(b) paramiko SFTPClient.get", size, paramiko_get)

        defs = build_source(SftpFileSource, work / "defs" / "partner",
                            server.attributes(table="orders", settle="0s"))  # fmt: skip

        def materialise() -> float:
            """The partition's materialisation alone; the instance and the sensor's tick that
            cuts the partition are set up untimed, as bench/sql_database.py and
            bench/kinesis.py do (the tick is timed on its own below)."""
            resources = {"warehouse": WarehouseResource(path=str(work / f"d{time.time()}.duckdb"))}
            with dg.instance_for_test() as instance:
                (partition,) = keys(tick(defs, instance))
                freeze_start_up_heap()  # as every run's process does (slot_guard.py)
                started = time.monotonic()
                dg.materialize(list(defs.assets or []), partition_key=partition,
                               resources=resources, instance=instance)  # fmt: skip
                return time.monotonic() - started

        # The anchor at its best: OpenSSH with whichever settings won the transfer rounds.
        default_won = (
            medians["(a) OpenSSH sftp get, defaults"]
            <= medians["(a2) OpenSSH sftp get, -B 262144 -R 256"]
        )
        best_options = [] if default_won else larger
        print(f"(e) uses OpenSSH's {'defaults' if default_won else '-B 262144 -R 256'}")

        def openssh_then_duckdb() -> None:
            local = work / "e.csv"
            subprocess.run([*openssh, *best_options, remote_file, str(local)], check=True)
            with duckdb.connect(str(work / f"e{time.time()}.duckdb")) as connection:
                connection.execute(f"create table t as select * from read_csv('{local}')")  # noqa: S608

        landings = {
            "(d) platform materialisation, file → DuckDB": materialise,
            "(e) OpenSSH get (best settings) + DuckDB read_csv": openssh_then_duckdb,
        }
        medians |= _alternate(landings, size, max(3, args.rounds // 2))
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        anchor = min(medians["(a) OpenSSH sftp get, defaults"],
                     medians["(a2) OpenSSH sftp get, -B 262144 -R 256"])  # fmt: skip
        c = medians["(c) platform transfer (asyncssh)"]
        d = medians["(d) platform materialisation, file → DuckDB"]
        e = medians["(e) OpenSSH get (best settings) + DuckDB read_csv"]
        print(
            f"(c) / best OpenSSH speed: {anchor / c:.2f}x (target >= 1.0); "
            f"(d)/(e) time: {d / e:.2f}x (target <= 1.3)"
        )

        listing = remote / "many"
        listing.mkdir()
        for index in range(args.listing):
            (listing / f"f_{index:05d}.csv").write_text("id\n1\n")
        many = build_source(SftpFileSource, work / "defs" / "many",
                            server.attributes(path=str(listing), settle="0s"))  # fmt: skip
        with dg.instance_for_test() as instance:
            started = time.monotonic()
            first = tick(many, instance)
            cut = time.monotonic() - started
            started = time.monotonic()
            tick(many, instance, first.cursor)
            idle = time.monotonic() - started
        print(
            f"sensor tick over {args.listing:,} files: first (cuts up to 50) {cut:.2f}s, "
            f"next {idle:.2f}s; cursor {len(first.cursor or '')} bytes"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
