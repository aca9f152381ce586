"""Build a declared source the way `defs.yaml` would, in a temporary folder, for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster.components.core.component_tree import ComponentTree
from filelock import Timeout

from ingestion_platform.core.warehouse import Warehouse, WarehouseResource


def build_source(
    component_type: type[dg.Component], folder: Path, attributes: dict[str, Any]
) -> dg.Definitions:
    """Write `defs.yaml` into `folder` (its name is the source name) and build the component."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"type": f"{component_type.__module__}.{component_type.__name__}"}
    # Written whole and renamed into place: test processes that build the same source at
    # once (test_concurrent_runs.py) must never read a half-written file.
    staged = folder / f".defs.yaml.{os.getpid()}"
    staged.write_text(yaml.safe_dump({**document, "attributes": attributes}))
    os.replace(staged, folder / "defs.yaml")
    component = component_type.resolve_from_yaml(yaml.safe_dump(attributes))  # type: ignore[attr-defined]
    return component.build_defs(ComponentTree.for_test().load_context.for_path(folder))


def with_warehouse(defs: dg.Definitions) -> dg.Definitions:
    """The definitions with a warehouse bound, so schedules and jobs can be resolved."""
    return dg.Definitions.merge(defs, dg.Definitions(resources={"warehouse": WarehouseResource()}))


def materialize(
    defs: dg.Definitions,
    *,
    partition_key: str | None = None,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    selection: list[str] | None = None,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialise the source's assets (optionally a `/`-joined key selection) in-process."""
    assets = list(defs.assets or [])
    if selection is not None:
        assets = [a for a in assets if a.key.to_user_string() in selection]
    return dg.materialize(
        assets,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The error a failed run's one failed step raised, unwrapped from Dagster's wrapper."""
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    while error.cause is not None and "DagsterExecutionStepExecutionError" in error.cls_name:
        error = error.cause
    return error.message.strip()


def warehouse_lock_is_free(warehouse: Warehouse) -> bool:
    """Whether no process holds the warehouse's writer lock (file lock or lake lock) now."""
    try:
        with warehouse.exclusive(timeout=0):
            return True
    except Timeout:
        return False


def start_only_run(instance: dg.DagsterInstance) -> None:
    """Mark the instance's one run started, as the daemon does once its process runs."""
    (run,) = instance.get_runs()
    started = dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)
    instance.run_storage.handle_run_event(run.run_id, started)


def tick_size_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str
) -> dg.SensorResult:
    """Evaluate the size sensor `name` and commit its tick as the daemon does: its
    partitions added, then a started run per request with its tags and run key."""
    from dagster._core.storage.tags import RUN_KEY_TAG
    from dagster._core.test_utils import create_run_for_test

    (sensor,) = [s for s in defs.sensors or [] if s.name == name]
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests or []:
        tags = {**request.tags, RUN_KEY_TAG: request.run_key}
        create_run_for_test(
            instance, job_name="__ASSET_JOB", tags=tags, status=dg.DagsterRunStatus.STARTED
        )
    return result


def requested_keys(result: dg.SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]
