"""Mistakes in an API source's declaration, caught when definitions load (`dg check defs`).

Beyond our own settings, the endpoints are dlt rest_api configuration, which dlt validates
only when a run starts, with an error that lists every type a field could have had. Here
the same validation runs while loading, with no network and no secret, and its deepest
finding becomes one line: the file and line, the field, the bad value, what is allowed.
"""

from __future__ import annotations

import difflib
from typing import Any, get_args

from dlt.common.exceptions import DictValidationException
from dlt.common.validation import validate_dict
from dlt.sources.rest_api import rest_api_resources
from dlt.sources.rest_api.config_setup import PAGINATOR_MAP
from dlt.sources.rest_api.typing import PaginatorConfig, RESTAPIConfig

from ingestion_platform.core.batching import parse_duration
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.sources.api.config import ApiDeclaration, resource_config

# `json_response` is dlt's deprecated alias of json_link; `auto` guesses, which hides typos.
PAGINATORS = sorted(set(PAGINATOR_MAP) - {"json_response"})
# Placeholder address: building dlt's resources needs one, and nothing is sent to it.
_NOWHERE = "http://declaration.check.invalid/"


def check_declaration(component: ApiDeclaration, source: SourceContext) -> None:
    _check_limits(component, source)
    names = [resource.name for resource in component.resources]
    if not names or len(set(names)) != len(names):
        raise source.error(
            "resources", "resource names must be present and unique", "name each endpoint once"
        )
    _check_batch(component, source)
    _check_renames(component, source)
    _check_dlt_config(component, source)


def _check_renames(component: ApiDeclaration, source: SourceContext) -> None:
    """A `rename:` never touches the keys dlt matches records on (its primary key, a
    parent's fields a child includes, the window's cursor): they keep the API's names."""
    included = {field for r in component.resources for field in r.include_from_parent or []}
    for index, resource in enumerate(component.resources):
        keys = resource.primary_key or []
        kept = included | ({keys} if isinstance(keys, str) else set(keys))
        if resource.window is not None:
            kept.add(resource.window.cursor_path)
        renamed = sorted(kept & set(resource.rename or {}))
        if renamed:
            raise source.error(
                f"resources[{index}].rename",
                f"{renamed[0]!r} is a key dlt matches records on (primary key, cursor or a "
                "field a child resource includes), so it keeps the API's name",
                f"remove {renamed[0]!r} from rename",
            )


def _check_limits(component: ApiDeclaration, source: SourceContext) -> None:
    limits = component.limits
    if limits.page_size and limits.max_page_size and limits.page_size > limits.max_page_size:
        raise source.error(
            "limits.page_size",
            f"{limits.page_size} is more than the API allows ({limits.max_page_size})",
            f"set page_size to at most {limits.max_page_size}",
        )
    # ApiLimits is a plain model inside the component, where Dagster allows no constrained
    # types (PositiveInt), so its numbers are checked here.
    for name in (
        "page_size",
        "max_page_size",
        "requests_per_second",
        "requests_per_minute",
        "burst",
        "timeout_seconds",
    ):
        value = getattr(limits, name)
        if value is not None and value <= 0:
            raise source.error(f"limits.{name}", f"must be positive, got {value:g}", "e.g. 5")
    try:
        parse_duration(limits.give_up_after)
    except ValueError as error:
        raise source.error("limits.give_up_after", str(error), "write e.g. 5m") from None


def _check_batch(component: ApiDeclaration, source: SourceContext) -> None:
    batch = component.batch
    if batch.is_time:
        return
    if batch.size_unit != "rows":
        raise source.error(
            "batch", "an API source counts records", "use `records: N` (or a time batch)"
        )
    windowed = [resource for resource in component.resources if resource.window]
    if len(windowed) != 1 or not windowed[0].window.ascending:  # type: ignore[union-attr]
        raise source.error(
            "resources",
            "a size batch needs exactly one resource with a `window:` whose records "
            "come in cursor order",
            "add `window: {start_param: ..., cursor_path: ..., ascending: true}` to the "
            "resource that drives the source",
        )


def _check_dlt_config(component: ApiDeclaration, source: SourceContext) -> None:
    """dlt's own validation of the endpoints and paginators, phrased per field."""
    if component.paginator is not None:
        _check_paginator(component.paginator, "paginator", source)
    for index, resource in enumerate(component.resources):
        paginator = resource.endpoint.get("paginator")
        if paginator is not None:
            _check_paginator(paginator, f"resources[{index}].endpoint.paginator", source)
    client: dict[str, Any] = {"base_url": _NOWHERE}
    if component.paginator is not None:
        client["paginator"] = component.paginator
    declared = [
        {
            key: value
            for key, value in resource.model_dump(exclude_none=True).items()
            if key not in ("window", "rename")  # the platform's own settings
        }
        for resource in component.resources
    ]
    try:
        validate_dict(RESTAPIConfig, {"client": client, "resources": declared}, path=".")
    except DictValidationException as error:
        raise _declaration_error(error, source) from None
    built = [
        resource_config(resource, component.limits, component.paginator, None)
        for resource in component.resources
    ]
    try:
        # Builds paginators and resolves `{resources.x.field}` references; sends nothing.
        rest_api_resources({"client": client, "resources": built})  # type: ignore[typeddict-item]
    except Exception as error:  # noqa: BLE001 - dlt raises plain TypeError/ValueError here
        raise source.error(
            "resources", f"dlt rejects the endpoints: {error}", "see dlt's rest_api documentation"
        ) from None


def _check_paginator(paginator: Any, field: str, source: SourceContext) -> None:
    kind = paginator if isinstance(paginator, str) else paginator.get("type", "auto")
    where = field if isinstance(paginator, str) else f"{field}.type"
    if kind not in PAGINATOR_MAP or kind == "json_response":
        raise source.error(
            where,
            f"unknown paginator {kind!r}; dlt knows {', '.join(PAGINATORS)}",
            f"write e.g. `type: {_closest(str(kind), PAGINATORS)}`",
        )
    if isinstance(paginator, dict) and kind in _PAGINATOR_FIELDS:
        allowed = _PAGINATOR_FIELDS[kind]
        unknown = sorted(set(paginator) - allowed)
        if unknown:
            raise source.error(
                f"{field}.{unknown[0]}",
                f"the {kind} paginator has no setting {unknown[0]!r}; it takes "
                f"{', '.join(sorted(allowed - {'type'})) or 'no settings'}",
                f"remove or rename {unknown[0]!r}",
            )


def _paginator_fields() -> dict[str, set[str]]:
    """Each paginator type's settings, read from dlt's TypedDict for its class."""
    configs = {option.__name__: option for option in get_args(PaginatorConfig) if option}
    fields: dict[str, set[str]] = {}
    for kind, paginator_class in PAGINATOR_MAP.items():
        name = f"{paginator_class.__name__}Config" if paginator_class else ""
        config = configs.get(name)
        fields[kind] = set(getattr(config, "__annotations__", {})) | {"type"}
    return fields


_PAGINATOR_FIELDS = _paginator_fields()


def _declaration_error(error: DictValidationException, source: SourceContext) -> Exception:
    """The deepest finding of dlt's nested union errors, on the field it concerns."""
    leaf = error
    while leaf.nested_exceptions:
        leaf = max(leaf.nested_exceptions, key=_depth)
    field = ".".join(part for part in [*leaf.path.strip("./").split("/"), leaf.field or ""] if part)
    return source.error(
        field,
        f"{leaf.msg} (dlt rest_api)",
        "see the endpoint settings of dlt's rest_api source",
    )


def _depth(error: DictValidationException) -> int:
    return error.path.count("/") * 2 + (1 if error.field else 0)


def _closest(word: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0)
    return matches[0] if matches else choices[0]
