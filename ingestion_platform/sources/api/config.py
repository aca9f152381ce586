"""The YAML vocabulary of an API source, and its translation into dlt rest_api configuration."""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import dagster as dg
import requests
from dlt.common.jsonpath import compile_path
from dlt.sources.rest_api.config_setup import create_paginator
from pydantic import Field

from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.instant_formats import format_bound
from ingestion_platform.sources.api.connectors.page_guard import PageGuard
from ingestion_platform.sources.api.connectors.rest_api import RefreshingClientCredentials


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
    # Sources naming the same key share one budget, whatever host or credential they use.
    rate_limit_key: str | None = None

    def effective_page_size(self) -> int | None:
        if self.page_size is None:
            return self.max_page_size
        return min(self.page_size, self.max_page_size or self.page_size)


class CursorWindow(dg.Model):
    """Which record field orders the data, and how a slice of it becomes the API's filter."""

    start_param: str
    cursor_path: str
    end_param: str | None = None
    format: str = "%Y-%m-%d"
    # The API returns records in cursor order, so a read can stop at the slice's end.
    ascending: bool = False


class ApiResource(dg.Model):
    """One endpoint, in dlt rest_api terms, plus an optional cursor window."""

    name: str
    endpoint: dict[str, Any]
    primary_key: str | list[str] | None = None
    include_from_parent: list[str] | None = None
    window: CursorWindow | None = None
    # Top-level keys landed under another name (`{userId: user_id_camel}`): two keys that
    # would land as one column (`userId`, `user_id`) fail the run until one is renamed.
    rename: dict[str, str] | None = None


@dataclass(frozen=True)
class Bounds:
    """A slice on the cursor: after/from `lower` up to/before `upper` (None = open-ended)."""

    lower: Any
    upper: Any
    lower_inclusive: bool
    upper_inclusive: bool

    def incremental(self, window: CursorWindow) -> dict[str, Any]:
        """dlt's incremental settings: the API filter plus the same filter on every record."""
        config: dict[str, Any] = {
            "cursor_path": window.cursor_path,
            "range_start": "closed" if self.lower_inclusive else "open",
            "range_end": "closed" if self.upper_inclusive else "open",
        }
        if self.lower is not None:
            config["start_param"] = window.start_param
            config["initial_value"] = render_cursor(self.lower, window)
        else:
            # dlt honours an end (and stops an ascending read there) only after a start. The
            # first slice has none: start below every value and send no start filter.
            config["initial_value"] = _below(render_cursor(self.upper, window))
            config["range_start"] = "closed"
        if self.upper is not None:
            config["end_value"] = render_cursor(self.upper, window)
            # An exclusive end maps onto the API's "before" parameter; an inclusive one
            # cannot, so those records are filtered here instead.
            if window.end_param and not self.upper_inclusive:
                config["end_param"] = window.end_param
        if window.ascending:
            config["row_order"] = "asc"
        return config


def _below(value: Any) -> Any:
    """A value of the same type that sorts before every cursor value an API can send."""
    return -(2**63) if isinstance(value, int) else ""


def cursor_value(record: Any, cursor_path: str) -> Any:
    for part in cursor_path.split("."):
        record = record[part]
    return record


def render_cursor(value: Any, window: CursorWindow) -> Any:
    """A bound as the API's parameter takes it: a time written with the window's `format`."""
    return format_bound(value, window.format) if isinstance(value, datetime) else value


def parse_cursor(value: Any, field: str) -> int | datetime:
    """A record's cursor value as a partition-key bound (an int, or a date/time)."""
    if isinstance(value, int):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"cursor field {field!r} holds {value!r}, which is neither an integer nor an "
            "ISO date/time"
        ) from None


def resource_config(
    resource: ApiResource, limits: ApiLimits, paginator: Any, bounds: Bounds | None
) -> dict[str, Any]:
    """One dlt rest_api resource entry, with the page size and the slice filled in."""
    endpoint = dict(resource.endpoint)
    params = dict(endpoint.get("params") or {})
    page_size = limits.effective_page_size()
    chosen = endpoint.get("paginator") or paginator
    if page_size is not None:
        if isinstance(chosen, dict) and chosen.get("type") == "offset":
            chosen = {**chosen, "limit": page_size}
        else:
            params.setdefault(limits.page_size_param, page_size)
    endpoint["params"] = params
    if isinstance(endpoint.get("data_selector"), str):
        # dlt would parse the JSONPath again for every page; parse it once.
        endpoint["data_selector"] = compile_path(endpoint["data_selector"])
    endpoint["paginator"] = PageGuard(
        create_paginator(chosen), resource.name, endpoint.get("data_selector")
    )
    config: dict[str, Any] = {"name": resource.name, "endpoint": endpoint}
    if resource.window is not None and bounds is not None:
        if bounds.lower is not None or bounds.upper is not None:
            endpoint["incremental"] = bounds.incremental(resource.window)
    if resource.primary_key is not None:
        config["primary_key"] = resource.primary_key
    if resource.include_from_parent:
        config["include_from_parent"] = resource.include_from_parent
    return config


def credential_of(auth: AuthSpec | None, source: SourceContext) -> list[str]:
    """The values that identify who the API counts requests against (an API limits per key).

    Only ever hashed into a budget's name (shared_budget.budget_file), never stored.
    """
    if auth is None:
        return []
    if isinstance(auth, OAuth2ClientCredentialsAuth):
        return [auth.type, source.resolve(auth.client_id, "auth.client_id")]
    if isinstance(auth, BearerTokenAuth):
        return [auth.type, source.resolve(auth.token, "auth.token")]
    if isinstance(auth, ApiKeyAuth):
        return [auth.type, source.resolve(auth.api_key, "auth.api_key")]
    return [auth.type, source.resolve(auth.username, "auth.username")]


def dlt_auth(
    auth: AuthSpec | None, source: SourceContext, base_url: str, token_session: requests.Session
) -> Any:
    """dlt's auth object for the declared style, with secrets read from the environment now.

    An OAuth2 token is fetched through `token_session`, so that request keeps the rate
    budget and is retried like every other.
    """
    if auth is None:
        return None
    if isinstance(auth, OAuth2ClientCredentialsAuth):
        token_url = auth.token_url
        if not token_url.startswith(("http://", "https://")):
            token_url = f"{base_url.rstrip('/')}/{token_url.lstrip('/')}"
        return RefreshingClientCredentials(
            session=token_session,
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


class ApiDeclaration(Protocol):
    """What the declaration checks and the lag measure read of a `RestApiSource` (named here
    so that neither imports the component that imports them)."""

    resources: list[ApiResource]
    batch: BatchSpec
    paginator: dict[str, Any] | str | None
    limits: ApiLimits

    def session(self, source: SourceContext) -> tuple[Any, dict[str, Any]]: ...
