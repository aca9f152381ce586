"""Shared steps of the file source tests: tick a sensor, land a partition, read a table."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_run_for_test

from ingestion_platform.core.warehouse import Warehouse


def files_sensor(defs: dg.Definitions) -> dg.SensorDefinition:
    """The source's files sensor (not its lag sensor)."""
    (sensor,) = [s for s in defs.sensors or [] if s.name.endswith("__sensor")]
    return sensor


def evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate the files sensor and throw its tick away, as `dagster sensor preview` does."""
    result = files_sensor(defs)(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
) -> dg.SensorResult:
    """Evaluate the files sensor and commit its tick as the daemon does: the dynamic
    partitions it adds and a run per request, with the request's tags and run key, in
    `status` (started: the sensor's next tick is not held behind it)."""
    result = evaluate(defs, instance, cursor)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests or []:
        tags = {
            **request.tags,
            RUN_KEY_TAG: request.run_key,
            SENSOR_NAME_TAG: files_sensor(defs).name,
        }
        create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags, status=status)
    return result


def keys(result: dg.SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]


def rows(warehouse: Warehouse, sql: str, *params: object) -> list[tuple]:
    return warehouse.query(sql, params)
