"""Numbers a declaration may hold: counts, sizes, intervals and ports, each with its range.

Not pydantic's `PositiveInt` & co.: Dagster lets every setting also be a `{{ template }}`
string, and it applies a field's constraints to that union, so `gt=0` met the string `"45"`
and crashed with a TypeError. Here a string passes (a template, checked once resolved, when
the component itself is built) and the range is written into the JSON schema for
`python -m ingestion_platform.check`, which names the line, the bound and the default.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

# How each JSON Schema bound reads in a fix: "write a number above 0".
BOUND_WORDS = {"exclusiveMinimum": "above", "minimum": "of at least", "maximum": "of at most"}


def _holds(keyword: str, value: float, bound: float) -> bool:
    if keyword == "exclusiveMinimum":
        return value > bound
    return value >= bound if keyword == "minimum" else value <= bound


def out_of_bounds(value: float, keyword: str, bound: float) -> str:
    """What is wrong with `value` and the fix, for the bound (a BOUND_WORDS keyword) it breaks."""
    return f"{value:g} is not allowed. Fix: write a number {BOUND_WORDS[keyword]} {bound:g}"


def _bounded(kind: type, bounds: dict[str, float]) -> Any:
    """`kind` within `bounds`, keyed by their JSON Schema keywords (BOUND_WORDS)."""

    def within(value: Any) -> Any:
        if isinstance(value, str):
            return value
        for keyword, bound in bounds.items():
            if not _holds(keyword, value, bound):
                raise ValueError(out_of_bounds(value, keyword, bound))
        return value

    return Annotated[kind, Field(json_schema_extra=dict(bounds)), AfterValidator(within)]


PositiveInt = _bounded(int, {"exclusiveMinimum": 0})
PositiveFloat = _bounded(float, {"exclusiveMinimum": 0})
NonNegativeInt = _bounded(int, {"minimum": 0})
NonNegativeFloat = _bounded(float, {"minimum": 0})
Port = _bounded(int, {"minimum": 1, "maximum": 65535})  # a TCP port a peer listens on
