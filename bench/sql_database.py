"""Benchmark: a PostgreSQL and a MariaDB table landed in DuckDB by the platform, against DuckDB's
own scanner copying them.

What is measured
----------------
A PostgreSQL table `bench_orders_<N>` of N rows (default 2,000,000) with columns
`id bigint primary key, customer_id int, updated_at timestamptz, amount numeric(10,2),
note text (32 chars), flagged bool` is generated with `generate_series` (only when it does
not already hold exactly N rows); the MariaDB table of the same name has the same rows
(`updated_at datetime(6)`, `flagged bool`), made with MariaDB's `seq_1_to_N`. Each variant
copies one of them into a fresh DuckDB file:

  pg-ctas       the anchor: DuckDB attaches PostgreSQL (postgres extension, READ_ONLY) and
                runs `CREATE TABLE t AS SELECT * FROM src.public.<table>` (its parallel ctid
                scan; DuckDB defaults, which were its best settings, bench/README.md).
  platform      (a) the `SqlDatabaseSource` component on the PostgreSQL table, built outside a
                project, materialising the whole table as one size-batch partition (`..N` on
                the `id` cursor) with `dg.materialize` in-process, on a fresh SQLite-backed
                Dagster instance. It reads through the same scanner.
  mysql-ctas    the anchor for MariaDB: the mysql extension's `CREATE TABLE t AS SELECT *`.
  platform-mysql  (a) on the MariaDB table.
  staged        the alternative design, for comparison: the scanner copies the table into a
                private temporary DuckDB file with no lock held, then the warehouse inserts
                it from there in one transaction (only that copy under the lock).
  platform-cli  (a) through `dagster asset materialize -f <defs file>`: adds Dagster's fixed
                per-run start-up (CLI, code loading, run/step worker process).
  connectorx    (b) the former limit: `cx.read_sql(url, "select * from t",
                return_type="arrow")` then `CREATE TABLE ... AS SELECT * FROM arrow_table`.
  dlt-default   (c) dlt's default SQLAlchemy backend (`sql_table(..., backend="sqlalchemy")`
                into a duckdb destination, dlt defaults otherwise). It runs at a few thousand
                rows/s, so it reads a separate 200,000-row table (`bench_orders_200000`, the
                same generator, i.e. the first 200,000 rows) and its time is scaled linearly
                to N in the output (marked "scaled").

How
---
Every variant run is its own fresh Python subprocess (this script re-invoked with `--worker`,
or the `dagster` CLI), with its own fresh DuckDB file, Dagster home (a `dagster.yaml` holding
only `telemetry: {enabled: false}`) and `RUNTIME__DLTHUB_TELEMETRY=false`.

* work s: `time.perf_counter()` inside the worker around the work only (the `dg.materialize`
  call; read + CTAS; `pipeline.run`), after imports and set-up. For the CLI variant there is
  no inside: its work s is the whole `dagster asset materialize` process.
* process s: `time.perf_counter()` in the parent around the whole subprocess (interpreter
  start-up and imports included).
* peak RSS: `ru_maxrss` from `os.wait4()` on the subprocess. Linux reports the maximum of
  the process and of every descendant it waited for, so the CLI figure covers the step
  worker process the CLI spawns.
* Every run is verified afterwards: the landed DuckDB table must hold exactly N rows (the
  sample size for dlt-default), else the benchmark stops with an error.
* The chosen variants (default pg-ctas, platform, mysql-ctas, platform-mysql) run
  alternately, `--repeat` rounds (default 3); the table reports the median and the best
  work s of each and the largest peak RSS seen. The ratios are the platform's work s over
  its anchor's (pg-ctas for platform, mysql-ctas for platform-mysql): of the medians, and
  of each round (the two ran back to back). The in-process platform runs also report how
  long their steps took (the scanner's describe outside the lock, dlt's schema migration,
  and the locked read+write) and the peak RSS when each ended: the platform's functions are
  wrapped with a timer in the worker; nothing in the platform is changed.
* The date, the machine and the load average (`os.getloadavg()`) at the start and the end
  are printed with the figures: another test run may be loading the machine.
* Bytecode: this environment sets PYTHONDONTWRITEBYTECODE, so every fresh process would
  compile dagster, dlt, SQLAlchemy... from source (~10 s each). Before timing, the venv is
  compiled once into a private cache (`--pycache`, used through PYTHONPYCACHEPREFIX; the venv
  itself is not touched). `--no-pycache` runs with the environment as it is.

Run `.venv/bin/python bench/sql_database.py --help` for the flags; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Any SQLAlchemy URL the platform accepts (the driver is whatever SQLAlchemy picks for it).
DEFAULT_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
SOURCE = "pg_bench"  # source name = folder name = DuckDB schema of the platform variants
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
SAMPLE_ROWS = 200_000
VARIANTS = (
    "pg-ctas",
    "platform",
    "mysql-ctas",
    "platform-mysql",
    "staged",
    "connectorx",
    "platform-cli",
    "dlt-default",
)
DEFAULT_VARIANTS = ("pg-ctas", "platform", "mysql-ctas", "platform-mysql")
MYSQL_VARIANTS = ("mysql-ctas", "platform-mysql")
# The variants that write their own table `t`, not the platform's `<source>.<table>`.
OWN_TABLE = ("pg-ctas", "mysql-ctas", "staged", "connectorx")
LABELS = {
    "pg-ctas": "anchor: PostgreSQL scanner CTAS",
    "platform": "(a) platform on PostgreSQL",
    "mysql-ctas": "anchor: MySQL scanner CTAS",
    "platform-mysql": "(a) platform on MariaDB",
    "staged": "scanner -> temp DuckDB -> locked insert",
    "connectorx": "(b) ConnectorX -> Arrow -> DuckDB",
    "platform-cli": "(a) platform, dagster CLI",
    "dlt-default": "(c) dlt sqlalchemy backend",
}
# Each platform variant and the anchor it is measured against.
PAIRS = (("platform", "pg-ctas"), ("platform-mysql", "mysql-ctas"), ("staged", "pg-ctas"))
DLT_STEPS = ("extract", "normalize", "load")


def table_name(rows: int) -> str:
    return f"bench_orders_{rows}"


def libpq_url(url: str) -> str:
    """The URL without a SQLAlchemy driver suffix (`+psycopg`), as ConnectorX wants it."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+")[0] + sep + rest


# --------------------------------------------------------------------------- source table


def pick_url(candidates: list[str]) -> str:
    import sqlalchemy as sa

    errors = []
    for url in candidates:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect():
                return url
        except sa.exc.DBAPIError as error:
            errors.append(f"{url}: {str(error.orig).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    raise SystemExit("cannot connect to PostgreSQL:\n  " + "\n  ".join(errors))


def ensure_table(url: str, rows: int) -> None:
    """Create `bench_orders_<rows>` with `rows` rows unless it already holds exactly that many."""
    import sqlalchemy as sa

    table = table_name(rows)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if connection.scalar(sa.text("select to_regclass(:t) is not null"), {"t": table}):
                existing = connection.scalar(sa.text(f"select count(*) from {table}"))  # noqa: S608
                if existing == rows:
                    print(f"table {table}: exists with {rows:,} rows", flush=True)
                    return
                print(f"table {table}: has {existing:,} rows, recreating", flush=True)
            started = time.perf_counter()
            statements = [
                "begin",
                "set local synchronous_commit = off",
                "set local maintenance_work_mem = '1GB'",
                f"drop table if exists {table}",
                f"create table {table} (id bigint, customer_id int, updated_at timestamptz, "
                "amount numeric(10,2), note text, flagged bool)",
                f"insert into {table} "  # noqa: S608
                "select g, mod(g * 7919, 100000)::int + 1, "
                "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', "
                "mod(g * 37, 1000000) / 100.0, md5(g::text), mod(g, 7) = 0 "
                f"from generate_series(1, {int(rows)}::bigint) as g",
                f"alter table {table} add primary key (id)",
                "commit",
                f"vacuum analyze {table}",
            ]
            for statement in statements:
                connection.execute(sa.text(statement))
        print(
            f"table {table}: created {rows:,} rows in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
    finally:
        engine.dispose()


def ensure_mysql_table(url: str, rows: int) -> None:
    """The MariaDB `bench_orders_<rows>`, the PostgreSQL table's rows, unless it has them all."""
    import sqlalchemy as sa

    table = table_name(rows)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            found = connection.scalar(
                sa.text(
                    "select count(*) from information_schema.tables "
                    "where table_schema = database() and table_name = :t"
                ),
                {"t": table},
            )
            if found and connection.scalar(sa.text(f"select count(*) from {table}")) == rows:  # noqa: S608
                print(f"MariaDB table {table}: exists with {rows:,} rows", flush=True)
                return
            started = time.perf_counter()
            connection.execute(sa.text(f"drop table if exists {table}"))
            connection.execute(
                sa.text(
                    f"create table {table} (id bigint primary key, customer_id int, "
                    "updated_at datetime(6), amount decimal(10,2), note text, flagged bool)"
                )
            )
            # MariaDB's sequence engine: seq_1_to_N is a table of 1..N.
            connection.execute(
                sa.text(
                    f"insert into {table} select seq, mod(seq * 7919, 100000) + 1, "  # noqa: S608
                    "timestamp'2026-01-01 00:00:00' + interval seq second, "
                    "mod(seq * 37, 1000000) / 100.0, md5(seq), mod(seq, 7) = 0 "
                    f"from seq_1_to_{int(rows)}"
                )
            )
        print(
            f"MariaDB table {table}: created {rows:,} rows in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
    finally:
        engine.dispose()


def drop_table(url: str, rows: int) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f"drop table if exists {table_name(rows)}"))
        print(f"table {table_name(rows)}: dropped", flush=True)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- workers


def platform_definitions(url: str, table: str, duckdb_path: str, source_root: str) -> Any:
    """The component's assets for `table`, bound to a warehouse at `duckdb_path`."""
    import dagster as dg
    import yaml
    from dagster.components.core.component_tree import ComponentTree

    from ingestion_platform.core.warehouse import WarehouseResource
    from ingestion_platform.slot_guard import guarded_in_process_executor
    from ingestion_platform.sources.sql.component import SqlDatabaseSource

    attrs = {
        "connection": url,
        "tables": [{"name": table, "cursor": "id", "primary_key": ["id"]}],
        "batch": {"rows": 100_000_000},
    }
    folder = Path(source_root) / SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    component = SqlDatabaseSource.resolve_from_yaml(yaml.dump(attrs))
    built = component.build_defs(ComponentTree.for_test().load_context.for_path(folder))
    return dg.Definitions(
        assets=list(built.assets or []),
        resources={"warehouse": WarehouseResource(path=duckdb_path)},
        executor=guarded_in_process_executor,  # the CLI variant runs as the platform's runs do
    )


def time_calls(
    targets: list[tuple[Any, str, str]], phases: dict[str, float], rss_after: dict[str, float]
) -> None:
    """Accumulate the wall time of every call to each `(owner, attribute, label)` target, and
    note the process's peak RSS (MiB) when each call ends."""
    import resource

    for owner, attribute, label in targets:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, _original: Any = original, _label: str = label, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kw)
            finally:
                phases[_label] = phases.get(_label, 0.0) + time.perf_counter() - started
                rss_after[_label] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        setattr(owner, attribute, timed)


def dlt_steps() -> list[tuple[Any, str, str]]:
    from dlt.pipeline.pipeline import Pipeline

    return [(Pipeline, name, name) for name in DLT_STEPS]


def platform_steps() -> list[tuple[Any, str, str]]:
    """The platform's timed steps: the scanner's describe (no rows), dlt's schema migration,
    then the locked transaction that reads the slice and writes it (Arrow path: migration,
    then the streamed insert)."""
    from ingestion_platform.sources.sql import landing as arrow_landing
    from ingestion_platform.sources.sql import scanner_landing

    return [
        (scanner_landing, "_sample", "describe"),
        (scanner_landing, "migrate_table", "schema"),
        (scanner_landing, "_commit", "locked read+write"),
        (arrow_landing, "migrate_table", "schema"),
        (arrow_landing, "_commit", "read+write"),
    ]


def add_partition(table: str, rows: int) -> None:
    """Register the `..rows` slice on the instance in DAGSTER_HOME (not timed)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(f"{SOURCE}__{table}", [f"..{rows}"])


def worker_platform(job: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from ingestion_platform.slot_guard import freeze_start_up_heap

    defs = platform_definitions(job["url"], job["table"], job["duckdb"], job["source_root"])
    assets = list(defs.assets)
    phases: dict[str, float] = {}
    rss_after: dict[str, float] = {}
    time_calls(platform_steps(), phases, rss_after)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(f"{SOURCE}__{job['table']}", [f"..{job['rows']}"])
        freeze_start_up_heap()  # as every run's process does (slot_guard.py)
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            partition_key=f"..{job['rows']}",
            resources=defs.resources,
            instance=instance,
        )
        elapsed = time.perf_counter() - started
    if not result.success:
        raise SystemExit("dg.materialize failed")
    return {"work_s": elapsed, "phases": phases, "rss_after": rss_after}


def worker_connectorx(job: dict[str, Any]) -> dict[str, Any]:
    import connectorx as cx
    import duckdb

    started = time.perf_counter()
    query = f"select * from {job['table']}"  # noqa: S608
    arrow_table = cx.read_sql(libpq_url(job["url"]), query, return_type="arrow")
    read = time.perf_counter() - started
    connection = duckdb.connect(job["duckdb"])
    connection.register("arrow_table", arrow_table)
    connection.execute(f"create table {job['table']} as select * from arrow_table")  # noqa: S608
    connection.close()
    elapsed = time.perf_counter() - started
    return {"work_s": elapsed, "phases": {"read": read, "write": elapsed - read}}


def attach_sql(url: str) -> str:
    """DuckDB's ATTACH of the source (the bench's URLs carry no password)."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    kind = "postgres" if parsed.get_backend_name() == "postgresql" else "mysql"
    parts = {"host": parsed.host, "port": parsed.port, "user": parsed.username}
    parts["dbname" if kind == "postgres" else "database"] = parsed.database
    libpq = " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)
    return f"attach '{libpq}' as src (type {kind}, read_only)"


def scanned_relation(url: str, table: str) -> str:
    return f"src.public.{table}" if url.startswith("postgresql") else f"src.{table}"


def worker_ctas(job: dict[str, Any]) -> dict[str, Any]:
    """The anchor: DuckDB's own scanner copying the whole table, DuckDB defaults."""
    import duckdb

    from ingestion_platform.core.duckdb_extensions import (
        SCANNER_EXTENSIONS,
        install_packaged_extensions,
    )

    install_packaged_extensions(SCANNER_EXTENSIONS)
    connection = duckdb.connect(job["duckdb"])
    started = time.perf_counter()
    connection.execute(attach_sql(job["url"]))
    source = scanned_relation(job["url"], job["table"])
    connection.execute(f"create table {job['table']} as select * from {source}")  # noqa: S608
    elapsed = time.perf_counter() - started
    connection.close()
    return {"work_s": elapsed, "phases": {}}


def worker_staged(job: dict[str, Any]) -> dict[str, Any]:
    """The alternative design: read into a private DuckDB file with no lock held, then
    insert from it into the warehouse in one transaction (the only locked part)."""
    import duckdb

    from ingestion_platform.core.duckdb_extensions import (
        SCANNER_EXTENSIONS,
        install_packaged_extensions,
    )
    from ingestion_platform.core.warehouse import Warehouse

    install_packaged_extensions(SCANNER_EXTENSIONS)
    warehouse = Warehouse(job["duckdb"])
    staging = str(Path(job["duckdb"]).with_suffix(".staging.duckdb"))
    started = time.perf_counter()
    private = duckdb.connect(staging, config=warehouse.write_config)
    private.execute(attach_sql(job["url"]))
    source = scanned_relation(job["url"], job["table"])
    private.execute(f"create table t as select * from {source}")  # noqa: S608
    private.close()
    read = time.perf_counter() - started
    with warehouse.exclusive():
        connection = warehouse.open_writer()
        connection.execute(f"attach '{staging}' as staged (read_only)")
        connection.execute("begin")
        connection.execute(f"create table {job['table']} as select * from staged.t")  # noqa: S608
        connection.execute("commit")
        connection.close()
    elapsed = time.perf_counter() - started
    Path(staging).unlink()
    return {"work_s": elapsed, "phases": {"read (no lock)": read, "copy (locked)": elapsed - read}}


def worker_dlt_default(job: dict[str, Any]) -> dict[str, Any]:
    import dlt
    from dlt.sources.sql_database import sql_table

    phases: dict[str, float] = {}
    rss_after: dict[str, float] = {}
    time_calls(dlt_steps(), phases, rss_after)
    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt_default",
        pipelines_dir=str(Path(job["duckdb"]).parent / "dlt_pipelines"),
        destination=dlt.destinations.duckdb(credentials=job["duckdb"]),
        dataset_name=SOURCE,
        progress=None,
    )
    started = time.perf_counter()
    info = pipeline.run(sql_table(credentials=job["url"], table=job["table"], backend="sqlalchemy"))
    elapsed = time.perf_counter() - started
    info.raise_on_failed_jobs()
    return {"work_s": elapsed, "phases": phases, "rss_after": rss_after}


WORKERS = {
    "platform": worker_platform,
    "platform-mysql": worker_platform,
    "pg-ctas": worker_ctas,
    "mysql-ctas": worker_ctas,
    "staged": worker_staged,
    "connectorx": worker_connectorx,
    "dlt-default": worker_dlt_default,
}


def run_worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    if job["variant"] == "add-partition":
        add_partition(job["table"], job["rows"])
        return
    outcome = WORKERS[job["variant"]](job)
    Path(job["result"]).write_text(json.dumps(outcome))


# --------------------------------------------------------------------------- parent


CLI_DEFS = '''"""Definitions for `dagster asset materialize -f`, built from BENCH_* variables."""

import os

from bench.sql_database import platform_definitions

defs = platform_definitions(
    os.environ["BENCH_PG_URL"],
    os.environ["BENCH_TABLE"],
    os.environ["BENCH_DUCKDB"],
    os.environ["BENCH_SOURCE_ROOT"],
)
'''


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run `cmd`; return (wall seconds, peak RSS MiB of it and its waited-for descendants)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(cmd)} exited with {process.returncode}:\n{tail}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def warm_bytecode(pycache: str) -> None:
    """Compile the venv and the repo into `pycache` once, so no run pays for compiling.

    Some environments set PYTHONDONTWRITEBYTECODE (this one does): every process would then
    compile dagster, dlt, SQLAlchemy... from source, ~10 s per process. Runs use
    PYTHONPYCACHEPREFIX=`pycache` instead, which leaves the venv untouched.
    """
    import sysconfig

    started = time.perf_counter()
    env = {**os.environ, "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    site_packages = sysconfig.get_paths()["purelib"]
    paths = [site_packages, str(REPO / "ingestion_platform"), str(REPO / "bench")]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *paths],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    print(f"bytecode cache {pycache}: ready in {time.perf_counter() - started:.1f}s", flush=True)


def count_rows(duckdb_path: Path, relation: str) -> int:
    import duckdb

    connection = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        return connection.execute(f"select count(*) from {relation}").fetchone()[0]  # noqa: S608
    finally:
        connection.close()


def run_variant(variant: str, args: argparse.Namespace, round_: int) -> dict[str, Any]:
    url = args.mysql_url if variant in MYSQL_VARIANTS else args.url
    rows = min(SAMPLE_ROWS, args.rows) if variant == "dlt-default" else args.rows
    table = table_name(rows)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-r{round_}-", dir=args.workdir))
    home = run_dir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    duckdb_path = run_dir / "warehouse.duckdb"
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "BENCH_PG_URL": url,
        "BENCH_TABLE": table,
        "BENCH_DUCKDB": str(duckdb_path),
        "BENCH_SOURCE_ROOT": str(run_dir / "sources"),
    }
    if args.pycache:
        env["PYTHONPYCACHEPREFIX"] = args.pycache
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    job = {
        "variant": variant,
        "url": url,
        "table": table,
        "rows": rows,
        "duckdb": str(duckdb_path),
        "source_root": str(run_dir / "sources"),
        "result": str(run_dir / "result.json"),
    }
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    if variant == "platform-cli":
        (run_dir / "defs.py").write_text(CLI_DEFS)
        (run_dir / "setup.json").write_text(json.dumps({**job, "variant": "add-partition"}))
        run_measured([*me, str(run_dir / "setup.json")], env, run_dir / "setup.log")
        cli = [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-f",
            str(run_dir / "defs.py"),
            "--select",
            f"{SOURCE}/{table}",
            f"--partition=..{rows}",
        ]
        wall, rss = run_measured(cli, env, run_dir / "run.log")
        outcome: dict[str, Any] = {"work_s": wall, "phases": {}}
    else:
        (run_dir / "job.json").write_text(json.dumps(job))
        wall, rss = run_measured([*me, str(run_dir / "job.json")], env, run_dir / "run.log")
        outcome = json.loads((run_dir / "result.json").read_text())
    relation = table if variant in OWN_TABLE else f"{SOURCE}.{table}"
    landed = count_rows(duckdb_path, relation)
    if landed != rows:
        raise SystemExit(
            f"{variant}: landed {landed:,} rows in {duckdb_path}:{relation}, expected {rows:,}"
        )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    record = {
        "variant": variant,
        "round": round_,
        "rows": rows,
        "work_s": outcome["work_s"],
        "process_s": wall,
        "rss_mib": rss,
        "phases": outcome["phases"],
        "rss_after": outcome.get("rss_after", {}),
    }
    phases = " ".join(f"{k}={v:.2f}s" for k, v in record["phases"].items())
    if record["rss_after"]:
        phases += "  peak RSS after " + " ".join(
            f"{k}={v:.0f}" for k, v in record["rss_after"].items()
        )
    print(
        f"  round {round_} {variant:<14} {rows:>11,} rows  work {record['work_s']:7.2f}s  "
        f"process {wall:7.2f}s  peak RSS {rss:7.0f} MiB  {phases}",
        flush=True,
    )
    return record


def summarise(records: list[dict[str, Any]], rows: int) -> None:
    print()
    print(f"N = {rows:,} rows; median and best work s of each variant's runs; peak RSS = max")
    header = (
        f"{'variant':<40} {'runs':>4} {'median s':>9} {'best s':>9} {'process s':>9} "
        f"{'rows/s':>11} {'peak RSS MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, float] = {}
    for variant in VARIANTS:
        runs = [r for r in records if r["variant"] == variant]
        if not runs:
            continue
        label, scale = LABELS[variant], 1.0
        if runs[0]["rows"] != rows:
            scale = rows / runs[0]["rows"]
            label += f" [{runs[0]['rows'] // 1000}k, x{scale:g}]"
        work = statistics.median(r["work_s"] for r in runs)
        medians[variant] = work
        best = min(runs, key=lambda r: r["work_s"])
        print(
            f"{label:<40} {len(runs):>4} {work * scale:>9.2f} {best['work_s'] * scale:>9.2f} "
            f"{statistics.median(r['process_s'] for r in runs) * scale:>9.2f} "
            f"{runs[0]['rows'] / work:>11,.0f} {max(r['rss_mib'] for r in runs):>12.0f}"
        )
        steps = sorted((r for r in runs if r["phases"]), key=lambda r: r["work_s"])
        if steps:
            phases = steps[len(steps) // 2]  # the run with the median work s
            shown = " + ".join(f"{k} {v:.2f}s" for k, v in phases["phases"].items())
            rest = phases["work_s"] - sum(phases["phases"].values())
            print(f"    steps (a median run): {shown}; the rest (Dagster, reflection) {rest:.2f}s")
    for variant, anchor in PAIRS:
        if variant in medians and anchor in medians:
            ours = [r["work_s"] for r in records if r["variant"] == variant]
            theirs = [r["work_s"] for r in records if r["variant"] == anchor]
            per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=False))
            print(
                f"{LABELS[variant]} / {LABELS[anchor]}: ratio of the medians "
                f"{medians[variant] / medians[anchor]:.2f} (target <= 1.2); per round {per_round}"
            )
    for variant in ("platform", "platform-mysql", "platform-cli"):
        runs = [r["rss_mib"] for r in records if r["variant"] == variant]
        if runs:
            verdict = "within" if max(runs) <= 1024 else "OVER"
            print(f"peak RSS {LABELS[variant]}: {max(runs):.0f} MiB, {verdict} 1 GiB at {rows:,}")


def machine() -> str:
    """CPU count and model, RAM, and the load average (other work on the machine skews times)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), {ram:.1f} GiB RAM, load average {load}; {revision()}"


def revision() -> str:
    """The commit the platform code is at, and whether ingestion_platform/ has local edits."""
    git = ["git", "-C", str(REPO)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "ingestion_platform"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return "commit unknown"
    edits = " + uncommitted edits in ingestion_platform/" if dirty.stdout.strip() else ""
    return f"commit {head.stdout.strip() or 'unknown'}{edits}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="table size N")
    parser.add_argument("--url", help="PostgreSQL URL (default: try postgres@, then root@)")
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL, help="MariaDB/MySQL URL")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--skip-dlt-default", action="store_true", help="skip variant (c)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds")
    parser.add_argument("--drop-table", action="store_true", help="drop the N-row table after")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder and DuckDB")
    parser.add_argument("--workdir", help="where run folders go (default: a temp dir)")
    parser.add_argument(
        "--pycache",
        default=str(Path(tempfile.gettempdir()) / "ingestion-bench-pycache"),
        help="bytecode cache (PYTHONPYCACHEPREFIX) for the runs, compiled before timing",
    )
    parser.add_argument(
        "--no-pycache",
        dest="pycache",
        action="store_const",
        const="",
        help="run with the environment's bytecode settings as they are",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker)
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.skip_dlt_default and "dlt-default" in variants:
        variants.remove("dlt-default")
    workdir_given = args.workdir is not None
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-sql-database-")
    args.workdir = workdir
    Path(workdir).mkdir(parents=True, exist_ok=True)
    args.url = url = pick_url([args.url] if args.url else list(DEFAULT_URLS))
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{started}; {machine()}; PostgreSQL {url}; run folders under {workdir}", flush=True)
    ensure_table(url, args.rows)
    if set(variants) & set(MYSQL_VARIANTS):
        ensure_mysql_table(args.mysql_url, args.rows)
    if "dlt-default" in variants and args.rows > SAMPLE_ROWS:
        ensure_table(url, SAMPLE_ROWS)

    if args.pycache:
        warm_bytecode(args.pycache)
    records = []
    alternating = [v for v in VARIANTS if v in variants and v != "dlt-default"]
    for round_ in range(1, args.repeat + 1):
        for variant in alternating:
            records.append(run_variant(variant, args, round_))
    if "dlt-default" in variants:
        records.append(run_variant("dlt-default", args, 1))
    summarise(records, args.rows)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load}")
    if args.drop_table:
        drop_table(url, args.rows)
        if set(variants) & set(MYSQL_VARIANTS):
            drop_table(args.mysql_url, args.rows)
    if not args.keep and not workdir_given:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
