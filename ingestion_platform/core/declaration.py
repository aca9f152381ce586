"""What every source declaration shares: where it was declared, secrets by reference, clear errors.

Secrets and endpoints are written as `{env: NAME}` in `defs.yaml` and read only when a run
needs them, so definitions load with nothing set and the error can name the variable.
(`{{ env.NAME }}` templates work too, but Dagster resolves those while loading.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster_shared.yaml_utils.source_position import SourcePositionTree


class EnvRef(dg.Model):
    """A value read from an environment variable when a run needs it."""

    env: str


Setting = str | EnvRef


class DeclarationError(ValueError):
    """A source declaration that cannot work, naming the file, the field and the fix."""

    def __init__(self, defs_file: str, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{defs_file}: {field}: {problem}. Fix: {fix}.")


class SourceFailure(RuntimeError):
    """A source's peer failed it (unreachable, refused credentials, unknown host key)."""


@dataclass(frozen=True)
class SourceContext:
    """The declared source a component builds: its name (= warehouse schema) and its file."""

    name: str
    defs_file: str
    # Where each YAML value was written, when the source was loaded from its defs.yaml.
    positions: SourcePositionTree | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_load_context(cls, context: dg.ComponentLoadContext) -> SourceContext:
        folder = Path(context.path)
        defs_file = folder / "defs.yaml" if folder.is_dir() else folder
        try:
            shown = defs_file.relative_to(Path.cwd())
        except ValueError:
            shown = defs_file
        name = (folder if folder.is_dir() else folder.parent).name
        return cls(name=name, defs_file=str(shown), positions=_positions(context))

    def error(self, field: str, problem: str, fix: str) -> DeclarationError:
        """An error naming `file:line` of `field` (e.g. `resources[1].endpoint.paginator`)."""
        line = self.line_of(field)
        where = f"{self.defs_file}:{line}" if line else self.defs_file
        return DeclarationError(where, field, problem, fix)

    def line_of(self, field: str) -> int | None:
        """The line of `field` under `attributes:`, or of its closest written ancestor."""
        if self.positions is None:
            return None
        path: list[str | int] = ["attributes"]
        for part in field.split("."):
            name, *indexes = re.split(r"\[(\d+)\]", part)
            path += [name] if name else []
            path += [int(index) for index in indexes if index]
        position, _ = self.positions.lookup_closest_and_path(path, trace=None)
        return position.start.line

    def resolve(self, value: Setting, field: str) -> str:
        """The setting's value; an unset variable fails naming it and this source."""
        if isinstance(value, str):
            return value
        resolved = os.environ.get(value.env)
        if not resolved:
            raise self.error(
                field,
                f"environment variable {value.env} is not set (source {self.name!r})",
                f"export {value.env} before running this source's assets",
            )
        return resolved

    @contextmanager
    def naming_failures(self, *kinds: type[BaseException]) -> Iterator[None]:
        """Re-raise `kinds` of errors naming this source and its file, for the run log."""
        try:
            yield
        except kinds as error:
            raise SourceFailure(f"source {self.name!r} ({self.defs_file}): {error}") from None


def _positions(context: dg.ComponentLoadContext) -> SourcePositionTree | None:
    """Where the component's YAML values were written (None when not loaded from YAML)."""
    tree = context.resolution_context.source_position_tree
    if tree is None:
        # The context building definitions may not carry it; the YAML declaration does.
        source_tree = getattr(getattr(context, "component_decl", None), "source_tree", None)
        tree = getattr(source_tree, "source_position_tree", None)
    return tree if isinstance(tree, SourcePositionTree) else None
