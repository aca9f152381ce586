"""Shared set-up and steps of the file source tests: an inbox, a local or S3 source, tick a
sensor, evaluate the lag check, read a table.

Registered for every test module by `pytest_plugins` in conftest.py (the `inbox` fixture).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_run_for_test

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import LocalFileSource, S3FileSource
from ingestion_platform_tests.sources import build_source


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty local folder files are dropped into, `tmp_path/drop`."""
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


def local_source(tmp_path: Path, inbox: Path, **attributes: object) -> dg.Definitions:
    """A LocalFileSource named `inbox` reading `inbox` into its table `orders`."""
    attributes = {"path": str(inbox), "table": "orders", **attributes}
    return build_source(LocalFileSource, tmp_path / "inbox", attributes)


def s3_source(folder: Path, endpoint: str, bucket: str, **attributes: object) -> dg.Definitions:
    """An S3FileSource in `folder` reading `bucket`'s `incoming/` at `endpoint` into `orders`."""
    base = {
        "bucket": bucket,
        "prefix": "incoming/",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "table": "orders",
    }
    return build_source(S3FileSource, folder, {**base, **attributes})


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


def files_lag(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    """One tick of the source's lag sensor: its check evaluation."""
    (lag_sensor,) = [s for s in defs.sensors or [] if s.name.endswith("__lag")]
    result = lag_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    (evaluation,) = [e for e in result.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    return evaluation
