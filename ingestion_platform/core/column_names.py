"""Warehouse column names: dlt's snake_case naming, which every source lands with.

Two source names can become one warehouse name (`aB` and `a_b` both land as `a_b`;
`Amount` and `amount` as `amount`). Left alone, one value overwrites the other (dlt keeps
the last key of a record) or the insert fails deep in DuckDB, so each source checks its
names here first and refuses, or quarantines, what would land as one column.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from dlt.common.normalizers.naming.snake_case import NamingConvention

_NAMING = NamingConvention()
# The columns every landing writes on each row: which partition, and when.
BATCH_KEY_COLUMN = "_batch_key"
LOADED_AT_COLUMN = "_loaded_at"


@lru_cache(maxsize=4096)
def warehouse_name(name: str) -> str:
    """The column `name` lands as (`my col` as `my_col`, `Amount` as `amount`)."""
    return _NAMING.normalize_identifier(name)


def clashing_names(names: Iterable[str]) -> dict[str, list[str]]:
    """Source names that would land as one column, by that column's name."""
    landed: dict[str, list[str]] = {}
    for name in names:
        landed.setdefault(warehouse_name(name), []).append(name)
    return {column: sources for column, sources in landed.items() if len(sources) > 1}


def describe_clash(clashes: dict[str, list[str]]) -> str:
    """The first clash, for a message: `'aB', 'a_b' would all land as column 'a_b'`."""
    column, names = next(iter(clashes.items()))
    return f"{', '.join(repr(name) for name in names)} would all land as column {column!r}"


def record_clashes(record: dict[str, Any]) -> dict[str, list[str]]:
    """Keys of a JSON record that dlt would land as one column, nested objects included.

    Mirrors dlt's flattening: a key is normalised as a path (`a__b` stays `a__b`), a nested
    object's keys become `parent__child` columns of the same table, and a list becomes a
    child table (named like a column, with names of its own inside).
    """
    columns: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    stack: list[tuple[dict[str, Any], tuple[str, ...], str]] = [(record, (), "")]
    while stack:
        current, path, where = stack.pop()
        for key, value in current.items():
            name = "__".join((*path, _path_name(key)))
            place = f"{where}{key}"
            if isinstance(value, dict):
                stack.append((value, (*path, _path_name(key)), f"{place}."))
            elif isinstance(value, list):
                children.setdefault(name, []).append(place)
                for item in value:
                    nested = record_clashes(item) if isinstance(item, dict) else {}
                    if nested:
                        return {c: [f"{place}[].{p}" for p in ps] for c, ps in nested.items()}
            else:
                columns.setdefault(name, []).append(place)
    for landed in (columns, children):
        clashes = {name: places for name, places in landed.items() if len(places) > 1}
        if clashes:
            return clashes
    return {}


@lru_cache(maxsize=4096)
def _path_name(key: str) -> str:
    return _NAMING.normalize_path(key) if key and not key.isspace() else "_empty"


def without_case_clashes(structure: dict[str, Any]) -> dict[str, Any]:
    """A `json_group_structure` result whose nested objects DuckDB can type: an object with
    keys that differ only in case (`X`, `x`) has no STRUCT (DuckDB's field names ignore
    case), so it is typed JSON and lands whole, as text. Top-level keys are columns, which
    `clashing_names` checks."""
    return {key: _struct_or_json(kind) for key, kind in structure.items()}


def _struct_or_json(kind: Any) -> Any:
    if isinstance(kind, dict):
        lowered = [key.lower() for key in kind]
        if len(set(lowered)) < len(lowered):
            return "JSON"
        return {key: _struct_or_json(value) for key, value in kind.items()}
    if isinstance(kind, list):
        return [_struct_or_json(value) for value in kind]
    return kind


def taken_names(names: Iterable[str], reserved: Iterable[str]) -> dict[str, str]:
    """Source names that would land as one of the platform's own columns (`_batch_key`,
    `_loaded_at`, a file's `_row`): source name → that column."""
    own = set(reserved)
    return {name: warehouse_name(name) for name in names if warehouse_name(name) in own}


def describe_taken(taken: dict[str, str]) -> str:
    """The first taken name, for a message: `'_row' would land as the platform's own '_row'`."""
    name, column = next(iter(taken.items()))
    return f"{name!r} would land as the platform's own column {column!r}"
