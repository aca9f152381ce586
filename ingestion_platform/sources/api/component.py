"""REST API sources declared in YAML, on dlt's rest_api source, kept within the API's limits.

One asset per resource (endpoint); one run fetches every selected resource of the source
through one budgeted session (sources/api/connectors/rest_api.py). The budget itself lives in a file
per API host and credential (sources/api/connectors/shared_budget.py), so runs, backfills and size
sensors of every source spending that key share it across processes on one machine.

A partition is a slice of one cursor field, declared as `window:` on the resource that
drives the source (dependent resources follow their parents):
- a time batch maps each window onto the API's own date filter;
- a size batch (`records: N`) lets a sensor page forward from the newest slice and cut a
  new one at the N-th record, for APIs that return records in cursor order.
dlt also drops any record whose cursor falls outside the slice, so a partition is exact
and re-runnable even when the API's filter is loose.

A backfill of a range is one run (no start-up per partition) that lands its windows in
order, one slice at a time: each window is read with the API's filter and committed on its
own, so every partition gets its own rows, bounds and request counters, and dependent
resources need no record-by-record keying.
"""

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
from dlt.sources.rest_api import rest_api_resources

from ingestion_platform.core.batching import (
    CheckedBatch,
    CursorSlice,
    parse_duration,
    scheduled_definitions,
)
from ingestion_platform.core.bounded import PositiveInt
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import SCHEMA_DRIFT, HealthSpec, drift_result, freshness_policy
from ingestion_platform.core.lag import lag_defs
from ingestion_platform.core.materialization import landing_metadata
from ingestion_platform.core.pending import Pending
from ingestion_platform.core.size_sensor import Measure, SizeStream, build_size_sensor
from ingestion_platform.core.warehouse import WAREHOUSE_POOL, WarehouseResource
from ingestion_platform.sources.api.checks import check_declaration
from ingestion_platform.sources.api.config import (
    ApiLimits,
    ApiResource,
    AuthSpec,
    Bounds,
    credential_of,
    cursor_value,
    dlt_auth,
    parse_cursor,
    resource_config,
)
from ingestion_platform.sources.api.connectors.rate_budget import rates_per_second
from ingestion_platform.sources.api.connectors.rest_api import (
    BudgetedSession,
    RefreshingClientCredentials,
)
from ingestion_platform.sources.api.connectors.shared_budget import SharedRateBudget, budget_file
from ingestion_platform.sources.api.errors import readable
from ingestion_platform.sources.api.lag import api_lag_measures
from ingestion_platform.sources.api.landing import LandingReport, land_slice
from ingestion_platform.sources.api.record_names import RecordNames


class RestApiSource(dg.Component, dg.Model, dg.Resolvable):
    """Endpoints of an HTTP API, landed in DuckDB one exact slice at a time."""

    base_url: Setting
    resources: list[ApiResource]
    batch: CheckedBatch
    auth: AuthSpec | None = None
    paginator: dict[str, Any] | str | None = None
    limits: ApiLimits = ApiLimits()
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 60
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        check_declaration(self, source)
        partitions_def = self.batch.partitions_def(f"{source.name}__records")
        specs = [
            dg.AssetSpec(
                key=[source.name, resource.name],
                group_name=source.name,
                kinds={"api", "dlt", "duckdb"},
                description=self._description(resource),
                partitions_def=partitions_def,
                metadata={"source_file": source.defs_file},
                skippable=True,
                # A dependent resource (`{resources.parent.field}`) reads its parent's records.
                deps=[dg.AssetKey([source.name, parent]) for parent in _parents(resource)],
                freshness_policy=freshness_policy(
                    self.batch, self.health, self.sensor_interval_seconds
                ),
            )
            for resource in self.resources
        ]

        @dg.multi_asset(
            name=f"{source.name}__fetch",
            specs=specs,
            check_specs=[
                dg.AssetCheckSpec(
                    SCHEMA_DRIFT,
                    asset=spec.key,
                    description="Columns the API added since the last landing.",
                )
                for spec in specs
            ],
            can_subset=True,
            pool=WAREHOUSE_POOL,
            backfill_policy=dg.BackfillPolicy.single_run(),
        )
        def _fetch(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Any:
            yield from self._materialize(context, warehouse, source)

        running = self.automation == "running"
        lag = lag_defs(
            source=source.name,
            measures=api_lag_measures(self, source, [s.key for s in specs], partitions_def),
            batch=self.batch,
            health=self.health,
            sensor_interval_seconds=self.sensor_interval_seconds,
        )
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
                unit="records",
            )
            return dg.Definitions.merge(dg.Definitions(assets=[_fetch], sensors=[sensor]), lag)
        return dg.Definitions.merge(scheduled_definitions(source.name, [_fetch], running), lag)

    def _description(self, resource: ApiResource) -> str:
        """What the asset holds and where it comes from, without secrets."""
        api = self.base_url if isinstance(self.base_url, str) else f"${self.base_url.env}"
        path = resource.endpoint.get("path", resource.name)
        if self.batch.is_time:
            boundary = self.batch.every or f"window of the cron {self.batch.cron!r}"
        else:
            boundary = f"{self.batch.size_threshold:,} new records"
        return (
            f"Records of {path} on the API at {api} (REST API source), one partition per "
            f"{boundary}; nested lists land in child tables {resource.name}__<field>."
        )

    def _driver(self) -> ApiResource:
        return next(resource for resource in self.resources if resource.window)

    def session(self, source: SourceContext) -> tuple[BudgetedSession, dict[str, Any]]:
        """A budgeted session and the dlt client config that sends through it."""
        base_url = source.resolve(self.base_url, "base_url")
        rates = rates_per_second(
            self.limits.requests_per_second, self.limits.requests_per_minute, self.limits.burst
        )
        budget = None
        if rates:
            budget = SharedRateBudget(
                rates,
                budget_file(base_url, credential_of(self.auth, source), self.limits.rate_limit_key),
                # A slot older than this belongs to a process that died (its pid reused).
                stale_after_seconds=max(600.0, 4 * self.limits.timeout_seconds),
            )
        session = BudgetedSession(
            budget=budget,
            give_up_after_seconds=parse_duration(self.limits.give_up_after),
            timeout_seconds=self.limits.timeout_seconds,
        )
        auth = dlt_auth(self.auth, source, base_url, session.for_tokens())
        if isinstance(auth, RefreshingClientCredentials):
            session.refreshable_auth = auth
        client: dict[str, Any] = {"base_url": base_url, "session": session}
        if auth is not None:
            client["auth"] = auth
        if self.paginator:
            client["paginator"] = self.paginator
        return session, client

    def _bounds(self, context: dg.AssetExecutionContext, key: str) -> Bounds:
        if self.batch.is_time:
            partitions_def = context.assets_def.partitions_def
            assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
            window = partitions_def.time_window_for_partition_key(key)
            return Bounds(window.start, window.end, lower_inclusive=True, upper_inclusive=False)
        cut = CursorSlice.from_key(key)
        return Bounds(cut.lo, cut.hi, lower_inclusive=False, upper_inclusive=True)

    def _materialize(
        self, context: dg.AssetExecutionContext, warehouse: WarehouseResource, source: SourceContext
    ) -> Iterator[dg.MaterializeResult]:
        names = {asset_key.path[-1] for asset_key in context.selected_asset_keys}
        selected = [resource.name for resource in self.resources if resource.name in names]
        # In partition order: time windows by start, size slices in the order they were cut.
        keys = list(context.partition_keys)
        session, client = self.session(source)
        # A table's first landing creates its columns; only later additions are drift.
        existed = {name: warehouse.get().table_exists(source.name, name) for name in selected}
        drifted: dict[str, list[str]] = {name: [] for name in selected}
        for key in keys:
            bounds = self._bounds(context, key)
            before = session.counters.as_dict()
            report = self._land(key, bounds, client, selected, warehouse, source)
            after = session.counters.as_dict()
            counters = {name: after[name] - before[name] for name in after}
            context.log.info(_summary(source.name, key, report, counters))
            for name in selected:
                metadata = landing_metadata(report, name, bounds.lower, bounds.upper)
                metadata.update(counters)
                if existed[name]:
                    drifted[name] += [
                        f"{table}.{column}"
                        for table, columns in report.new_columns.items()
                        if table == name or table.startswith(f"{name}__")
                        for column in columns
                    ]
                if len(keys) == 1:
                    yield dg.MaterializeResult(
                        asset_key=[source.name, name],
                        metadata=metadata,
                        check_results=self._checks(context, source, name, drifted[name]),
                    )
                else:
                    # One run, many partitions: each partition's materialisation gets its own.
                    context.add_asset_metadata(
                        metadata, asset_key=dg.AssetKey([source.name, name]), partition_key=key
                    )
        if len(keys) > 1:
            for name in selected:
                yield dg.MaterializeResult(
                    asset_key=[source.name, name],
                    check_results=self._checks(context, source, name, drifted[name]),
                )

    @staticmethod
    def _checks(
        context: dg.AssetExecutionContext, source: SourceContext, name: str, drifted: list[str]
    ) -> list[dg.AssetCheckResult]:
        """The selected in-run checks of one resource (API pages may repeat a record, so
        rows read and rows landed legitimately differ: no reconciliation check here)."""
        key = dg.AssetKey([source.name, name])
        if dg.AssetCheckKey(key, SCHEMA_DRIFT) not in context.selected_asset_check_keys:
            return []
        return [drift_result(key, drifted)]

    def _land(
        self,
        key: str,
        bounds: Bounds,
        client: dict[str, Any],
        selected: list[str],
        warehouse: WarehouseResource,
        source: SourceContext,
    ) -> LandingReport:
        config = {
            "client": client,
            "resources": [
                resource_config(resource, self.limits, self.paginator, bounds)
                for resource in self.resources
            ],
        }
        wanted = [r for r in rest_api_resources(config) if r.name in selected]  # type: ignore[arg-type]
        renames = {resource.name: resource.rename or {} for resource in self.resources}
        for resource in wanted:
            resource.add_map(RecordNames(resource.name, renames.get(resource.name, {})))
        try:
            return land_slice(
                warehouse=warehouse.get(),
                dataset=source.name,
                pipeline_name=f"{source.name}__api",
                resources=wanted,
                batch_keys=[key],
                key_of=lambda _record: key,
            )
        except Exception as error:  # noqa: BLE001 - re-raised with the cause made readable
            raise readable(error, source) from None

    @contextmanager
    def _open_measure(self, source: SourceContext) -> Iterator[Measure]:
        driver = self._driver()
        window = driver.window
        assert window is not None
        # One session for the whole tick: one token, and the source's shared budget.
        _, client = self.session(source)

        def measure(_stream: str, after: Any, threshold: int) -> Any:
            bounds = Bounds(after, None, lower_inclusive=False, upper_inclusive=False)
            config = {
                "client": client,
                "resources": [resource_config(driver, self.limits, self.paginator, bounds)],
            }
            try:
                (resource,) = rest_api_resources(config)  # type: ignore[arg-type]
                return _count_pending(resource, window.cursor_path, threshold)
            except Exception as error:  # noqa: BLE001 - re-raised with the cause made readable
                raise readable(error, source) from None

        yield measure


def _summary(source: str, key: str, report: LandingReport, counters: dict[str, int]) -> str:
    tables = ", ".join(f"{table} {rows:,} rows" for table, rows in report.rows_by_table.items())
    spent = ", ".join(f"{name} {count}" for name, count in counters.items() if count)
    return f"{source} {key}: {tables or 'no rows'}; {spent or 'no requests'}"


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


def _parents(resource: ApiResource) -> list[str]:
    """The resources whose records a dependent resource's endpoint refers to."""
    return sorted(set(re.findall(r"\{resources\.(\w+)\.", json.dumps(resource.endpoint))))
