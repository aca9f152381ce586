"""What every source declaration shares: where it was declared, secrets by reference, clear errors.

Secrets and endpoints are written as `{env: NAME}` in `defs.yaml` and read only when a run
needs them, so definitions load with nothing set and the error can name the variable.
(`{{ env.NAME }}` templates work too, but Dagster resolves those while loading.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg


class EnvRef(dg.Model):
    """A value read from an environment variable when a run needs it."""

    env: str


Setting = str | EnvRef


class DeclarationError(ValueError):
    """A source declaration that cannot work, naming the file, the field and the fix."""

    def __init__(self, defs_file: str, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{defs_file}: {field}: {problem}. Fix: {fix}.")


@dataclass(frozen=True)
class SourceContext:
    """The declared source a component builds: its name (= warehouse schema) and its file."""

    name: str
    defs_file: str

    @classmethod
    def from_load_context(cls, context: dg.ComponentLoadContext) -> SourceContext:
        folder = Path(context.path)
        defs_file = folder / "defs.yaml" if folder.is_dir() else folder
        try:
            shown = defs_file.relative_to(Path.cwd())
        except ValueError:
            shown = defs_file
        name = (folder if folder.is_dir() else folder.parent).name
        return cls(name=name, defs_file=str(shown))

    def error(self, field: str, problem: str, fix: str) -> DeclarationError:
        return DeclarationError(self.defs_file, field, problem, fix)

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
