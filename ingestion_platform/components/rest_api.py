"""REST API sources declared in YAML, on dlt's rest_api source, kept within the API's limits.

One asset per resource (endpoint); one run fetches every selected resource of the source
through one budgeted session (see connectors/rest_api.py), so the rate budget is shared.
A time partition maps onto the API's own date filter (`window:` on a resource), and dlt
also drops any record whose time field falls outside the window, so each partition is an
exact, re-runnable slice even when the API's filter is loose. Backfills run one partition
per run: an API's limits, not our reads, are the bottleneck.
"""

from typing import Annotated, Any, Literal

import dagster as dg
import requests
from dlt.sources.helpers.requests import Client
from dlt.sources.rest_api import rest_api_resources
from pydantic import Field

from ingestion_platform.batching import BatchSpec, parse_duration
from ingestion_platform.components.declaration import Setting, SourceContext
from ingestion_platform.components.materialization import landing_metadata
from ingestion_platform.components.sql_database import WAREHOUSE_POOL
from ingestion_platform.connectors.rest_api import (
    ApiError,
    BudgetedSession,
    RateBudget,
    RefreshingClientCredentials,
)
from ingestion_platform.landing import land_slice
from ingestion_platform.warehouse import WarehouseResource


class OAuth2ClientCredentialsAuth(dg.Model):
    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: Setting
    client_secret: Setting


class BearerTokenAuth(dg.Model):
    type: Literal["bearer"]
    token: Setting


class ApiKeyAuth(dg.Model):
    type: Literal["api_key"]
    api_key: Setting
    name: str = "X-API-Key"
    location: Literal["header", "query"] = "header"


class HttpBasicAuth(dg.Model):
    type: Literal["http_basic"]
    username: Setting
    password: Setting


AuthSpec = Annotated[
    OAuth2ClientCredentialsAuth | BearerTokenAuth | ApiKeyAuth | HttpBasicAuth,
    Field(discriminator="type"),
]


class ApiLimits(dg.Model):
    """How much the API allows at once (page size) and how often (a request budget)."""

    page_size: int | None = None
    max_page_size: int | None = None
    page_size_param: str = "limit"
    requests_per_second: float | None = None
    requests_per_minute: int | None = None
    burst: int | None = None
    give_up_after: str = "5m"
    timeout_seconds: float = 60


class TimeWindow(dg.Model):
    """How a time partition becomes the API's filter, and which record field holds the time."""

    start_param: str
    cursor_path: str
    end_param: str | None = None
    format: str = "%Y-%m-%d"


class ApiResource(dg.Model):
    """One endpoint, in dlt rest_api terms, plus an optional time window mapping."""

    name: str
    endpoint: dict[str, Any]
    primary_key: str | list[str] | None = None
    include_from_parent: list[str] | None = None
    window: TimeWindow | None = None


class RestApiSource(dg.Component, dg.Model, dg.Resolvable):
    """Endpoints of an HTTP API, landed in DuckDB one exact time window at a time."""

    base_url: Setting
    resources: list[ApiResource]
    batch: BatchSpec
    auth: AuthSpec | None = None
    paginator: dict[str, Any] | str | None = None
    limits: ApiLimits = ApiLimits()
    automation: Literal["running", "stopped"] = "stopped"

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

        job = dg.define_asset_job(f"{source.name}__job", selection=[_fetch])
        status = self.automation == "running"
        schedule = dg.build_schedule_from_partitioned_job(
            job,
            name=f"{source.name}__schedule",
            default_status=dg.DefaultScheduleStatus.RUNNING
            if status
            else dg.DefaultScheduleStatus.STOPPED,
        )
        return dg.Definitions(assets=[_fetch], jobs=[job], schedules=[schedule])

    def _check(self, source: SourceContext) -> None:
        if not self.batch.is_time:
            raise source.error(
                "batch",
                "API sources are batched by time windows in this version",
                "use `every:` or `cron:` with `start:`, and `window:` on each windowed resource",
            )
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

    def _materialize(
        self, context: dg.AssetExecutionContext, warehouse: WarehouseResource, source: SourceContext
    ) -> Any:
        window = context.partition_time_window
        key = context.partition_key
        auth = self._auth(source)
        session = BudgetedSession(
            budget=RateBudget(
                self.limits.requests_per_second, self.limits.requests_per_minute, self.limits.burst
            ),
            give_up_after_seconds=parse_duration(self.limits.give_up_after),
            timeout_seconds=self.limits.timeout_seconds,
            refreshable_auth=auth if isinstance(auth, RefreshingClientCredentials) else None,
        )
        selected = {asset_key.path[-1] for asset_key in context.selected_asset_keys}
        config = {
            "client": {
                "base_url": source.resolve(self.base_url, "base_url"),
                "session": session,
                **({"auth": auth} if auth is not None else {}),
                **({"paginator": self.paginator} if self.paginator else {}),
            },
            "resources": [
                self._resource_config(r, window.start, window.end) for r in self.resources
            ],
        }
        resources = rest_api_resources(config)  # type: ignore[arg-type]
        wanted = [resource for resource in resources if resource.name in selected]
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
            if resource.name not in selected:
                continue
            metadata = landing_metadata(report, resource.name, window.start, window.end)
            metadata.update(counters)
            yield dg.MaterializeResult(asset_key=[source.name, resource.name], metadata=metadata)

    def _resource_config(self, resource: ApiResource, start: Any, end: Any) -> dict[str, Any]:
        endpoint = dict(resource.endpoint)
        params = dict(endpoint.get("params") or {})
        page_size = self._page_size()
        if page_size is not None:
            paginator = endpoint.get("paginator") or self.paginator
            if isinstance(paginator, dict) and paginator.get("type") == "offset":
                endpoint["paginator"] = {**paginator, "limit": page_size}
            else:
                params.setdefault(self.limits.page_size_param, page_size)
        endpoint["params"] = params
        if resource.window is not None:
            window = resource.window
            endpoint["incremental"] = {
                "start_param": window.start_param,
                **({"end_param": window.end_param} if window.end_param else {}),
                "cursor_path": window.cursor_path,
                "initial_value": start.strftime(window.format),
                "end_value": end.strftime(window.format),
                "range_start": "closed",
                "range_end": "open",
            }
        config: dict[str, Any] = {"name": resource.name, "endpoint": endpoint}
        if resource.primary_key is not None:
            config["primary_key"] = resource.primary_key
        if resource.include_from_parent:
            config["include_from_parent"] = resource.include_from_parent
        return config

    def _page_size(self) -> int | None:
        limits = self.limits
        if limits.page_size is None:
            return limits.max_page_size
        return min(limits.page_size, limits.max_page_size or limits.page_size)

    def _auth(self, source: SourceContext) -> Any:
        auth = self.auth
        if auth is None:
            return None
        if isinstance(auth, OAuth2ClientCredentialsAuth):
            base = source.resolve(self.base_url, "base_url").rstrip("/")
            token_url = auth.token_url
            if not token_url.startswith(("http://", "https://")):
                token_url = f"{base}/{token_url.lstrip('/')}"
            return RefreshingClientCredentials(
                # dlt's retrying client, minus raise-on-error: a 401 here gets a clear message.
                session=Client(raise_for_status=False).session,
                access_token_url=token_url,
                client_id=source.resolve(auth.client_id, "auth.client_id"),
                client_secret=source.resolve(auth.client_secret, "auth.client_secret"),
            )
        if isinstance(auth, BearerTokenAuth):
            return {"type": "bearer", "token": source.resolve(auth.token, "auth.token")}
        if isinstance(auth, ApiKeyAuth):
            return {
                "type": "api_key",
                "name": auth.name,
                "location": auth.location,
                "api_key": source.resolve(auth.api_key, "auth.api_key"),
            }
        return {
            "type": "http_basic",
            "username": source.resolve(auth.username, "auth.username"),
            "password": source.resolve(auth.password, "auth.password"),
        }


class ApiSourceError(RuntimeError):
    """An API source's run failed; the message says where and never carries a secret."""


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
