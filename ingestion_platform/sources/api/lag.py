"""Lag of an API source: what waits at the API that no partition holds yet.

- A time batch: closed windows that did not land (core/window_lag.py: the schedule is the
  cutter, so a window it did not land is waiting data), counted per resource.
- A size batch: records past the newest cut, found by paging the driving resource from the
  largest upper bound of the partition keys, as the API itself answers. It stops at one
  batch (`records: N`): the check only needs to know whether a whole batch waits, and
  every page is spent from the API key's rate budget. `detail.capped` says when it stopped.
Measured apart from the size sensor's own counting; a failing API raises SourceFailure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dlt.sources.rest_api import rest_api_resources

from ingestion_platform.core.batching import CursorSlice
from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.lag import LagMeasure, SourceLag
from ingestion_platform.core.window_lag import closed_windows_lag
from ingestion_platform.sources.api.config import (
    ApiDeclaration,
    Bounds,
    cursor_value,
    parse_cursor,
    resource_config,
)
from ingestion_platform.sources.api.errors import readable


def api_lag_measures(
    component: ApiDeclaration,
    source: SourceContext,
    keys: list[dg.AssetKey],
    partitions_def: dg.PartitionsDefinition,
) -> dict[dg.AssetKey, LagMeasure]:
    """The lag measure of each resource's table."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return {key: _windows_measure(key, partitions_def) for key in keys}
    measure = _records_measure(component, source, partitions_def)
    return dict.fromkeys(keys, measure)


def _windows_measure(key: dg.AssetKey, windows: dg.TimeWindowPartitionsDefinition) -> LagMeasure:
    return lambda instance: closed_windows_lag(instance, key, windows, datetime.now(UTC))


def _records_measure(
    component: ApiDeclaration, source: SourceContext, partitions_def: dg.PartitionsDefinition
) -> LagMeasure:
    assert isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name
    name = partitions_def.name
    driver = next(resource for resource in component.resources if resource.window)
    window = driver.window
    assert window is not None
    cap = component.batch.size_threshold or 1

    def measure(instance: dg.DagsterInstance) -> SourceLag:
        highs = [CursorSlice.from_key(key).hi for key in instance.get_dynamic_partitions(name)]
        after = max(highs, default=None)
        try:
            _, client = component.session(source)
            bounds = Bounds(after, None, lower_inclusive=False, upper_inclusive=False)
            config = {
                "client": client,
                "resources": [
                    resource_config(driver, component.limits, component.paginator, bounds)
                ],
            }
            (resource,) = rest_api_resources(config)  # type: ignore[arg-type]
            waiting, oldest = _page_forward(resource, window.cursor_path, cap)
        except Exception as error:  # noqa: BLE001 - re-raised naming the source
            named = f"source {source.name!r} ({source.defs_file}): "
            cause = str(readable(error, source)).removeprefix(named)
            raise SourceFailure(f"{named}lag not measured: {cause}") from None
        return SourceLag(
            waiting=waiting,
            unit="records",
            oldest_waiting_at=oldest if isinstance(oldest, datetime) else None,
            detail={"capped": int(waiting >= cap)},
        )

    return measure


def _page_forward(resource: Any, cursor_path: str, cap: int) -> tuple[int, Any]:
    """Records past the mark, up to `cap`, and the smallest cursor among them."""
    seen, oldest = 0, None
    pages = iter(resource)
    try:
        for record in pages:
            value = parse_cursor(cursor_value(record, cursor_path), cursor_path)
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            oldest = value if oldest is None or value < oldest else oldest
            seen += 1
            if seen >= cap:
                break
    finally:
        close = getattr(pages, "close", None)
        if close:
            close()
    return seen, oldest
