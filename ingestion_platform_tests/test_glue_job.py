"""GlueJobSource against moto's server: job runs per partition, landing, failures, backfills.

moto keeps Glue jobs and job runs (each run here spends 0.5 s in STARTING and in RUNNING) but
does not run job scripts, so a thread acting as Glue's worker (demo/glue_worker.py) writes
each run's output objects into moto's S3 while the platform polls the run. A proxy in front
of moto's Glue turns chosen runs FAILED (glue_helpers.py), since moto cannot fail one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.declaration import DeclarationError
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.glue_worker import aws_client, serve, slow_job_runs
from ingestion_platform.sources.glue.run import MARKER_ARGUMENT, RunRecord, RunRecords
from ingestion_platform_tests.glue_helpers import (
    JOB,
    GlueProxy,
    GlueWorld,
    expected_rows,
    landed_rows,
)
from ingestion_platform_tests.moto_server import running_moto
from ingestion_platform_tests.sources import failure_message, materialize

NAME = "orders_glue__orders"


@pytest.fixture(scope="module")
def world() -> Iterator[GlueWorld]:
    """moto's server with the job and bucket, the failing proxy, and the worker thread."""
    stop = threading.Event()
    with running_moto() as moto, GlueProxy(moto) as proxy:
        world = GlueWorld(moto, proxy.endpoint, proxy, aws_client("glue", moto))
        world.prepare()
        worker = threading.Thread(target=serve, args=(moto, JOB, stop, 0.05), daemon=True)
        worker.start()
        yield world
        stop.set()
        worker.join(timeout=5)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """In memory (runs, events and the key-value storage): twice as fast as on disk here."""
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


@pytest.fixture
def glue(world: GlueWorld, aws_env: None) -> GlueWorld:
    world.proxy.fail.clear()
    return world


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def test_a_partition_starts_a_job_run_with_its_arguments_and_lands_exactly_its_output(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    root = glue.new_root()
    defs = glue.declare(tmp_path, root)
    (asset,) = defs.assets or []
    host = glue.glue_endpoint.removeprefix("http://")
    assert asset.descriptions_by_key[asset.key] == (  # type: ignore[union-attr]
        f"Files the AWS Glue job orders_export (region us-east-1, endpoint {host}) writes to "
        f"s3://glue-output/{root}dt={{start:%Y-%m-%d}}/, landed into table orders, one "
        "partition per day (one job run per partition); bad rows go to the source's "
        "_quarantine table."
    )
    result = materialize(defs, partition_key="2026-11-02", resources=resources, instance=instance)

    (run,) = glue.runs(root)
    assert run["Arguments"] == {
        "--start": "2026-11-02T00:00:00+00:00",
        "--end": "2026-11-03T00:00:00+00:00",
        "--day": "2026-11-02",
        "--output_path": f"s3://glue-output/{root}",
        MARKER_ARGUMENT: f"{NAME}/2026-11-02",
    }
    expected = expected_rows("2026-11-02T00:00:00+00:00", "2026-11-03T00:00:00+00:00")
    assert len(expected) == 48
    assert landed_rows(warehouse, "2026-11-02") == expected
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["glue_job_run_id"].value == run["Id"]
    assert metadata["glue_state"].value == "SUCCEEDED"
    assert metadata["dagster/row_count"].value == 48
    assert metadata["files"].value == 1  # Spark's _SUCCESS marker is not data
    assert metadata["output"].value == f"s3://glue-output/{root}dt=2026-11-02/"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"rows_reconcile": True, "schema_drift": True, "unplaced_rows": True}


def test_rematerialising_starts_a_new_job_run_and_replaces_the_slice(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    root = glue.new_root()
    defs = glue.declare(tmp_path, root)
    for _ in range(2):
        materialize(defs, partition_key="2026-11-03", resources=resources, instance=instance)

    first, second = glue.runs(root)
    assert first["Id"] != second["Id"]
    assert first["Arguments"] == second["Arguments"]
    expected = expected_rows("2026-11-03T00:00:00+00:00", "2026-11-04T00:00:00+00:00")
    assert landed_rows(warehouse, "2026-11-03") == expected  # replaced, not duplicated
    assert warehouse.count("orders_glue", "orders") == len(expected)


def test_a_failed_job_run_fails_the_run_with_glues_error_and_leaves_the_warehouse(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    """moto cannot fail a job run: the proxy answers GetJobRun with FAILED and the message."""
    root = glue.new_root()
    defs = glue.declare(tmp_path, root)
    materialize(defs, partition_key="2026-11-05", resources=resources, instance=instance)
    before = warehouse.query("select * from orders_glue.orders order by order_id")

    error = "An error occurred while calling o97.pyWriteDynamicFrame. Access Denied (403)"
    glue.proxy.fail["2026-11-05T00:00:00+00:00"] = error
    result = materialize(
        defs,
        partition_key="2026-11-05",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    failed_run = glue.runs(root)[-1]["Id"]
    defs_file = tmp_path / "orders_glue" / "defs.yaml"
    assert failure_message(result) == (
        "dagster._core.definitions.events.Failure: "
        f"source 'orders_glue' ({defs_file}): Glue job 'orders_export' run {failed_run} ended "
        f"FAILED: {error}. Nothing was landed"
    )
    assert warehouse.query("select * from orders_glue.orders order by order_id") == before


def test_a_backfill_starts_one_job_run_per_partition_and_lands_every_day(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    root = glue.new_root()
    defs = glue.declare(tmp_path, root)
    (asset,) = defs.assets or []
    assert asset.backfill_policy is None  # Dagster's default: a run per partition
    days = ["2026-11-10", "2026-11-11", "2026-11-12"]
    materialize(defs, resources=resources, instance=instance, tags=_range(days[0], days[-1]))

    runs = glue.runs(root)
    assert sorted(r["Arguments"]["--day"] for r in runs) == days
    assert sorted(r["Arguments"][MARKER_ARGUMENT] for r in runs) == [f"{NAME}/{d}" for d in days]
    for day, end in zip(days, ["2026-11-11", "2026-11-12", "2026-11-13"], strict=True):
        assert landed_rows(warehouse, day) == expected_rows(day + "T00:00Z", end + "T00:00Z")


def test_a_single_run_backfill_starts_one_job_run_for_the_range_and_lands_each_day(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    root = glue.new_root()
    defs = glue.declare(tmp_path, root, backfill="single_run")
    (asset,) = defs.assets or []
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    result = materialize(
        defs, resources=resources, instance=instance, tags=_range("2026-11-14", "2026-11-16")
    )

    (run,) = glue.runs(root)
    assert run["Arguments"]["--start"] == "2026-11-14T00:00:00+00:00"
    assert run["Arguments"]["--end"] == "2026-11-17T00:00:00+00:00"
    assert run["Arguments"][MARKER_ARGUMENT] == f"{NAME}/2026-11-14..2026-11-16"
    per_day = {}
    for day, end in [("14", "15"), ("15", "16"), ("16", "17")]:
        key = f"2026-11-{day}"
        per_day[key] = expected_rows(f"{key}T00:00Z", f"2026-11-{end}T00:00Z")
        assert landed_rows(warehouse, key) == per_day[key]
    materialized = {
        event.partition: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert {key: m["dagster/row_count"].value for key, m in materialized.items()} == {
        key: len(rows) for key, rows in per_day.items()
    }
    assert {m["glue_job_run_id"].value for m in materialized.values()} == {run["Id"]}


def test_a_partition_whose_job_run_is_still_running_is_attached_not_started_again(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    """One run recorded by id; one whose starter died before recording it (found by marker)."""
    root = glue.new_root()
    defs = glue.declare(tmp_path, root)
    records = RunRecords(instance, NAME)
    slow = 3.0
    slow_job_runs(glue.moto, slow)
    try:
        for day, end, by_id in [
            ("2026-11-20", "2026-11-21", True),
            ("2026-11-21", "2026-11-22", False),
        ]:
            marker = f"{NAME}/{day}"
            run_id = glue.glue.start_job_run(
                JobName=JOB,
                Arguments={
                    "--start": f"{day}T00:00:00+00:00",
                    "--end": f"{end}T00:00:00+00:00",
                    "--output_path": f"s3://glue-output/{root}",
                    MARKER_ARGUMENT: marker,
                },
            )["JobRunId"]
            records.put([day], RunRecord(marker, run_id if by_id else None))
        started = [r["Id"] for r in glue.runs(root)]
        result = materialize(
            defs, resources=resources, instance=instance, tags=_range("2026-11-20", "2026-11-21")
        )
    finally:
        slow_job_runs(glue.moto, 0.5)

    assert [r["Id"] for r in glue.runs(root)] == started  # nothing started twice
    materialized = {
        e.partition: e.materialization.metadata["glue_job_run_id"].value
        for e in result.get_asset_materialization_events()
    }
    assert materialized == {"2026-11-20": started[0], "2026-11-21": started[1]}
    assert records.get("2026-11-21") == RunRecord(f"{NAME}/2026-11-21", started[1])
    for day, end in [("2026-11-20", "2026-11-21"), ("2026-11-21", "2026-11-22")]:
        assert landed_rows(warehouse, day) == expected_rows(day + "T00:00Z", end + "T00:00Z")


def test_a_size_batch_is_refused_naming_the_field_and_the_fix(
    tmp_path: Path, glue: GlueWorld
) -> None:
    with pytest.raises(DeclarationError) as refused:
        glue.declare(tmp_path, glue.new_root(), batch={"rows": 1000})
    assert str(refused.value) == (
        f"{tmp_path / 'orders_glue' / 'defs.yaml'}: batch: a Glue job runs per time window, and a "
        "size batch (rows) has no window to pass it. Fix: use a time batch, e.g. "
        "`batch: {every: day, start: 2026-01-01}`."
    )


def test_a_run_that_times_out_leaves_the_job_run_going_and_the_next_run_attaches(
    tmp_path: Path, glue: GlueWorld, instance: dg.DagsterInstance, warehouse: Warehouse, resources
) -> None:
    root = glue.new_root()
    slow_job_runs(glue.moto, 3.0)
    try:
        impatient = glue.declare(tmp_path, root, timeout="1s")
        result = materialize(
            impatient,
            partition_key="2026-11-24",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        (run,) = glue.runs(root)
        message = failure_message(result)
        # How many seconds it waited, and in which state it saw the run, depend on the load.
        assert f"Glue job 'orders_export' run {run['Id']} is still STARTING after " in message
        assert message.endswith(
            "(timeout 1s). Nothing was landed; it goes on, and the next run of the partition "
            "attaches to it (or raise `timeout`)"
        )
        patient = glue.declare(tmp_path, root)
        result = materialize(
            patient, partition_key="2026-11-24", resources=resources, instance=instance
        )
    finally:
        slow_job_runs(glue.moto, 0.5)

    assert [r["Id"] for r in glue.runs(root)] == [run["Id"]]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["glue_job_run_id"].value == run["Id"]
    expected = expected_rows("2026-11-24T00:00Z", "2026-11-25T00:00Z")
    assert landed_rows(warehouse, "2026-11-24") == expected
