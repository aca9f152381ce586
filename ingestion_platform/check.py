"""`python -m ingestion_platform.check`: every source declaration checked, one line per mistake.

Why not `dg check yaml`: it keeps one declaration per component type (dagster-dg's
`check_yaml` collects them in a dict keyed by type), so of ten SQL sources it validates one
and passes nine typos. `dg check defs` checks them all but stops at the first broken one, and
shows pydantic's error for every member of a union (`attributes.batch.str … Input should be
a valid string` beside the real one). Here each `defs.yaml` is checked on its own: first its
attributes against the component's JSON schema (the per-setting fixes of
`batching.checked_batch_schema`), then, if those pass, by building its definitions the way
Dagster loads them, so the component's own checks (`DeclarationError`) run too.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml
from dagster.components.core.component_tree import ComponentTree
from dagster_shared.yaml_utils.source_position import ValueAndSourcePositionTree
from jsonschema import Draft202012Validator, ValidationError

from ingestion_platform.core.bounded import BOUND_WORDS, out_of_bounds
from ingestion_platform.core.declaration import DeclarationError
from ingestion_platform.core.defs_yaml import parse_with_source_positions


def check_project(project: Path) -> tuple[int, list[str]]:
    """How many declarations the project's defs folder holds, and their mistakes in order."""
    tree = ComponentTree.for_project(project)
    problems: list[str] = []
    files = sorted(tree.defs_module_path.rglob("defs.y*ml"))
    for defs_file in files:
        shown = _shown(defs_file, project)
        found = _check_file(defs_file, shown)
        if not found:
            found = _check_build(tree, defs_file, shown)
        problems += found
    return len(files), problems


def _check_file(defs_file: Path, shown: str) -> list[str]:
    """Mistakes visible in the file alone: YAML syntax, the type, each setting's schema."""
    try:
        documents = parse_with_source_positions(defs_file.read_text(), filename=str(defs_file))
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else 1
        return [f"{shown}:{line}: not valid YAML: {error.problem}. Fix: correct the syntax."]
    problems = []
    for document in documents:
        value = document.value if isinstance(document.value, dict) else {}
        component = _component_type(value.get("type"))
        if component is None:
            problems.append(
                f"{shown}:{_line(document, ['type'])}: type: no component "
                f"{value.get('type')!r}. Fix: write the type as the docs' source reference "
                "does, e.g. ingestion_platform.sources.sql.component.SqlDatabaseSource."
            )
            continue
        model = component.get_model_cls()  # type: ignore[attr-defined]
        if model is None:
            continue
        validator = Draft202012Validator(model.model_json_schema())
        found = []
        for error in validator.iter_errors(value.get("attributes") or {}):
            path, text = _schema_problem(error)
            found.append((_line(document, ["attributes", *path]), _field(path), text))
        problems += [f"{shown}:{line}: {field}: {text}" for line, field, text in sorted(found)]
    return problems


def _check_build(tree: ComponentTree, defs_file: Path, shown: str) -> list[str]:
    """The component's own checks, run by building this declaration's definitions alone."""
    try:
        tree.build_defs_at_path(defs_file.parent)
    except Exception as error:  # noqa: BLE001 - every failure becomes one readable line
        return [_build_problem(error, defs_file, shown)]
    return []


def _build_problem(error: BaseException, defs_file: Path, shown: str) -> str:
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:
        if isinstance(cause, DeclarationError):
            return str(cause).replace(str(defs_file), shown, 1)
    # Dagster re-raises pydantic's error with each location flattened into text; the
    # innermost one keeps the location as a path.
    for cause in reversed(chain):
        if isinstance(cause, pydantic.ValidationError):
            return _pydantic_problem(cause, defs_file, shown)
    last = chain[-1]
    return f"{shown}: {type(last).__name__}: {last}".strip()


def _pydantic_problem(error: pydantic.ValidationError, defs_file: Path, shown: str) -> str:
    """The one meaningful entry: Dagster's `{{ template }}` alternative (`str`) is dropped."""
    entries = error.errors()
    entry = next((e for e in entries if e["loc"][-1:] != ("str",)), entries[0])
    # Union branches are named in the location too (`function-after[…]`, `HealthSpec`).
    loc = entry["loc"]
    path = [
        part
        for at, part in enumerate(loc)
        if not (
            isinstance(part, str) and ("[" in part or (part[:1].isupper() and at < len(loc) - 1))
        )
    ]
    (document,) = parse_with_source_positions(defs_file.read_text(), filename=str(defs_file))
    field = _field(path)
    message = str(entry["msg"]).removeprefix("Value error, ").removeprefix(f"{field}: ")
    return f"{shown}:{_line(document, ['attributes', *path])}: {field}: {message}"


def _schema_problem(error: ValidationError) -> tuple[list[str | int], str]:
    """Where a schema error is, and what is wrong with the fix, in the docs' words."""
    path = list(error.absolute_path)
    if error.validator in BOUND_WORDS:  # core/bounded.py writes the bound beside the default
        default = error.schema.get("default")
        example = f", e.g. the default {default}" if default is not None else ""
        problem = out_of_bounds(error.instance, str(error.validator), error.validator_value)
        return path, f"{problem}{example}."
    if error.validator in ("anyOf", "oneOf") and error.context:
        # The `{{ template }}` alternative Dagster allows for any model is not the user's aim.
        real = [e for e in error.context if e.schema.get("type") != "string" or e.absolute_path]
        deepest = max(real or error.context, key=lambda e: len(e.absolute_path))
        return _schema_problem(deepest)
    if error.validator == "const" and isinstance(error.validator_value, str):
        # batching._fix_when_invalid: the impossible constant is the fix itself.
        return path, f"{error.instance!r} is not allowed. Fix: write {error.validator_value}."
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        problems = []
        for name in unknown:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(allowed)}"
            problems.append(f"unknown setting {name!r}. Fix: remove it, or {hint}")
        return [*path, unknown[0]], "; ".join(problems)
    if error.validator == "required":
        return path, f"{error.message}. Fix: add it."
    if error.validator == "type":
        return path, f"{error.instance!r} is not a {error.validator_value}. Fix: write a " + (
            f"{error.validator_value} here."
        )
    return path, f"{error.message}. Fix: see the source reference in docs/sources/."


def _component_type(name: Any) -> type | None:
    if not isinstance(name, str) or "." not in name:
        return None
    module, _, attribute = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return None
    return found if isinstance(found, type) and hasattr(found, "get_model_cls") else None


def _line(document: ValueAndSourcePositionTree, path: Sequence[str | int]) -> int:
    position, _ = document.source_position_tree.lookup_closest_and_path(list(path), trace=None)
    return position.start.line


def _field(path: Sequence[str | int]) -> str:
    field = ""
    for part in path:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    return field or "attributes"


def _shown(defs_file: Path, project: Path) -> str:
    try:
        return str(defs_file.relative_to(project))
    except ValueError:
        return str(defs_file)


def main(argv: Sequence[str]) -> int:
    project = Path(argv[0]) if argv else Path.cwd()
    # Dagster's beta notices and load-time warnings are not the user's mistakes.
    warnings.simplefilter("ignore")
    logging.getLogger("dagster").setLevel(logging.ERROR)
    checked, problems = check_project(project.resolve())
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} mistake(s) in {checked} declaration file(s).")
        return 1
    print(f"{checked} declaration file(s) checked: every one is valid.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
