"""Shared steps of the file source tests: tick a sensor, land a partition, read a table."""

from __future__ import annotations

import dagster as dg

from ingestion_platform.warehouse import Warehouse


def tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate the source's one sensor and apply its dynamic partition requests."""
    (sensor,) = list(defs.sensors or [])
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def keys(result: dg.SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]


def rows(warehouse: Warehouse, sql: str, *params: object) -> list[tuple]:
    return warehouse.query(sql, params)
