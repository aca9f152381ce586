"""REST API sources declared in YAML, on dlt's rest_api source, kept within the API's limits.

One asset per resource (endpoint); one run fetches every selected resource of the source
through one budgeted session (connectors/rest_api.py), so the rate budget is shared.

A partition is a slice of one cursor field, declared as `window:` on the resource that
drives the source (dependent resources follow their parents):
- a time batch maps each window onto the API's own date filter;
- a size batch (`records: N`) lets a sensor page forward from the newest slice and cut a
  new one at the N-th record, for APIs that return records in cursor order.
dlt also drops any record whose cursor falls outside the slice, so a partition is exact
and re-runnable even when the API's filter is loose. Backfills run one partition per run:
the API's limits, not our reads, are the bottleneck.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
import requests
from dlt.sources.rest_api import rest_api_resources

from ingestion_platform.batching import (
    BatchSpec,
    CursorSlice,
    parse_duration,
    scheduled_definitions,
)
from ingestion_platform.components.declaration import Setting, SourceContext
from ingestion_platform.components.materialization import landing_metadata
from ingestion_platform.components.rest_api_config import (
    ApiLimits,
    ApiResource,
    AuthSpec,
    Bounds,
    cursor_value,
    dlt_auth,
    parse_cursor,
    resource_config,
)
from ingestion_platform.connectors.rate_budget import RateBudget
from ingestion_platform.connectors.rest_api import (
    ApiError,
    BudgetedSession,
    RefreshingClientCredentials,
)
from ingestion_platform.landing import land_slice
from ingestion_platform.pending import Pending
from ingestion_platform.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.warehouse import WAREHOUSE_POOL, WarehouseResource


class ApiSourceError(RuntimeError):
    """An API source's run failed; the message says where and never carries a secret."""


class RestApiSource(dg.Component, dg.Model, dg.Resolvable):
    """Endpoints of an HTTP API, landed in DuckDB one exact slice at a time."""

    base_url: Setting
    resources: list[ApiResource]
    batch: BatchSpec
    auth: AuthSpec | None = None
    paginator: dict[str, Any] | str | None = None
    limits: ApiLimits = ApiLimits()
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: int = 60

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        partitions_def = self.batch.partitions_def(f"{source.name}__records")
        specs = [
            dg.AssetSpec(
                key=[source.name, resource.name],
                group_name=source.name,
                kinds={"api", "dlt", "duckdb"},
                description=f"Records of the {resource.name} endpoint of {source.name}.",
                partitions_def=partitions_def,
                metadata={"source_file": source.defs_file},
                skippable=True,
            )
            for resource in self.resources
        ]

        @dg.multi_asset(
            name=f"{source.name}__fetch",
            specs=specs,
            can_subset=True,
            pool=WAREHOUSE_POOL,
            backfill_policy=dg.BackfillPolicy.multi_run(1),
        )
        def _fetch(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Any:
            yield from self._materialize(context, warehouse, source)

        running = self.automation == "running"
        if not self.batch.is_time:
            sensor = build_size_sensor(
                name=f"{source.name}__size_sensor",
                spec=self.batch,
                streams=[SizeStream(self._driver().name, [s.key for s in specs], partitions_def)],  # type: ignore[arg-type]
                open_measure=lambda: self._open_measure(source),
                minimum_interval_seconds=self.sensor_interval_seconds,
                description=f"Cuts a partition of {source.name} per "
                f"{self.batch.size_threshold} new records.",
                running=running,
            )
            return dg.Definitions(assets=[_fetch], sensors=[sensor])
        return scheduled_definitions(source.name, [_fetch], running)

    def _check(self, source: SourceContext) -> None:
        limits = self.limits
        if limits.page_size and limits.max_page_size and limits.page_size > limits.max_page_size:
            raise source.error(
                "limits.page_size",
                f"{limits.page_size} is more than the API allows ({limits.max_page_size})",
                f"set page_size to at most {limits.max_page_size}",
            )
        for name in ("requests_per_second", "requests_per_minute", "burst"):
            value = getattr(limits, name)
            if value is not None and value <= 0:
                raise source.error(f"limits.{name}", f"must be positive, got {value}", "e.g. 5")
        parse_duration(limits.give_up_after)
        names = [resource.name for resource in self.resources]
        if not names or len(set(names)) != len(names):
            raise source.error(
                "resources", "resource names must be present and unique", "name each endpoint once"
            )
        if not self.batch.is_time:
            if self.batch.size_unit != "rows":
                raise source.error(
                    "batch", "an API source counts records", "use `records: N` (or a time batch)"
                )
            windowed = [resource for resource in self.resources if resource.window]
            if len(windowed) != 1 or not windowed[0].window.ascending:  # type: ignore[union-attr]
                raise source.error(
                    "resources",
                    "a size batch needs exactly one resource with a `window:` whose records "
                    "come in cursor order",
                    "add `window: {start_param: ..., cursor_path: ..., ascending: true}` to the "
                    "resource that drives the source",
                )

    def _driver(self) -> ApiResource:
        return next(resource for resource in self.resources if resource.window)

    def _session(self, source: SourceContext) -> tuple[BudgetedSession, dict[str, Any]]:
        """A budgeted session and the dlt client config that sends through it."""
        base_url = source.resolve(self.base_url, "base_url")
        auth = dlt_auth(self.auth, source, base_url)
        session = BudgetedSession(
            budget=RateBudget.per_second(
                self.limits.requests_per_second, self.limits.requests_per_minute, self.limits.burst
            ),
            give_up_after_seconds=parse_duration(self.limits.give_up_after),
            timeout_seconds=self.limits.timeout_seconds,
            refreshable_auth=auth if isinstance(auth, RefreshingClientCredentials) else None,
        )
        client: dict[str, Any] = {"base_url": base_url, "session": session}
        if auth is not None:
            client["auth"] = auth
        if self.paginator:
            client["paginator"] = self.paginator
        return session, client

    def _materialize(
        self, context: dg.AssetExecutionContext, warehouse: WarehouseResource, source: SourceContext
    ) -> Iterator[dg.MaterializeResult]:
        key = context.partition_key
        if self.batch.is_time:
            window = context.partition_time_window
            bounds = Bounds(window.start, window.end, lower_inclusive=True, upper_inclusive=False)
        else:
            cut = CursorSlice.from_key(key)
            bounds = Bounds(cut.lo, cut.hi, lower_inclusive=False, upper_inclusive=True)
        session, client = self._session(source)
        config = {
            "client": client,
            "resources": [
                resource_config(resource, self.limits, self.paginator, bounds)
                for resource in self.resources
            ],
        }
        selected = {asset_key.path[-1] for asset_key in context.selected_asset_keys}
        wanted = [r for r in rest_api_resources(config) if r.name in selected]  # type: ignore[arg-type]
        try:
            report = land_slice(
                warehouse=warehouse.get(),
                dataset=source.name,
                pipeline_name=f"{source.name}__api",
                resources=wanted,
                batch_keys=[key],
                key_of=lambda _record: key,
            )
        except Exception as error:  # noqa: BLE001 - re-raised with the cause made readable
            raise _readable(error, source) from None
        counters = session.counters.as_dict()
        context.log.info(f"{source.name}: {report.rows} records; requests {counters}")
        for resource in self.resources:
            if resource.name in selected:
                metadata = landing_metadata(report, resource.name, bounds.lower, bounds.upper)
                metadata.update(counters)
                yield dg.MaterializeResult(
                    asset_key=[source.name, resource.name], metadata=metadata
                )

    @contextmanager
    def _open_measure(self, source: SourceContext) -> Iterator[Measure]:
        driver = self._driver()
        window = driver.window
        assert window is not None

        def measure(_stream: str, after: Any, threshold: int) -> Any:
            _, client = self._session(source)
            bounds = Bounds(after, None, lower_inclusive=False, upper_inclusive=False)
            config = {
                "client": client,
                "resources": [resource_config(driver, self.limits, self.paginator, bounds)],
            }
            (resource,) = rest_api_resources(config)  # type: ignore[arg-type]
            return _count_pending(resource, window.cursor_path, threshold)

        yield measure


def _count_pending(resource: Any, cursor_path: str, threshold: int) -> Pending:
    """Page forward until `threshold` records past the mark are seen (or the data ends)."""
    seen = 0
    newest: Any = None
    pages = iter(resource)
    try:
        for record in pages:
            newest = parse_cursor(cursor_value(record, cursor_path), cursor_path)
            seen += 1
            if seen >= threshold:
                break
    finally:
        close = getattr(pages, "close", None)
        if close:
            close()
    full = newest if seen >= threshold else None
    return Pending(seen, full, newest)


def _readable(error: BaseException, source: SourceContext) -> BaseException:
    """The most specific cause in the chain, phrased for the person who declared the source."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ApiError):
            return ApiSourceError(f"source {source.name!r}: {seen}")
        if isinstance(seen, requests.HTTPError) and seen.response is not None:
            response = seen.response
            path = response.url.split("?", 1)[0]
            return ApiSourceError(
                f"source {source.name!r}: {path} answered HTTP {response.status_code} "
                f"{response.reason}. Fix: check `auth` and `base_url` in {source.defs_file}"
            )
        seen = seen.__cause__ or seen.__context__
    return error
