"""Resolving attribute strings that hold no template, without compiling one.

Dagster renders every string attribute as a Jinja `NativeTemplate` (so `{{ env.URL }}` works),
which compiles a template per string: at 1,000 sources a tenth of the load. A string with no
`{` holds no Jinja markup, so its rendering depends on nothing but the string: Jinja's lexer
turns `\\r\\n` and `\\r` into `\\n` and drops one trailing newline, and the native renderer
returns what `ast.literal_eval` makes of the text (`"30"` gives 30) or else the text.
`render_plain` does exactly that; anything else (markup, or text `literal_eval` fails on in a
way Jinja would not swallow) goes to Dagster's own resolution, so errors read as before.
"""

from __future__ import annotations

import re
from ast import literal_eval, parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster.components.resolved.context import ResolutionContext

_NEWLINE = re.compile(r"\r\n|\r|\n")
_DEFER = object()


def render_plain(text: str) -> Any:
    """What `NativeTemplate(text).render()` returns for a non-empty `text` without `{`."""
    lines = _NEWLINE.split(text)
    if lines[-1] == "":
        del lines[-1]
    data = "\n".join(lines)
    if not data:
        return None
    try:
        return literal_eval(parse(data, mode="eval"))
    except (ValueError, SyntaxError, MemoryError):
        return data
    except Exception:  # Jinja would turn this into a template error: let it
        return _DEFER


@contextmanager
def plain_strings_unrendered() -> Iterator[None]:
    """While open, Dagster resolves attribute strings without markup by `render_plain`."""
    # The seam: `ResolutionContext._resolve_inner_value` renders one string. The replacement
    # answers what it would for plain strings (tested in test_definitions.py against Jinja)
    # and hands it everything else, so a concurrent load sees no difference.
    original = ResolutionContext._resolve_inner_value

    def resolve_inner_value(context: ResolutionContext, value: Any) -> Any:
        if isinstance(value, str) and value and "{" not in value:
            rendered = render_plain(value)
            if rendered is not _DEFER:
                return rendered
        return original(context, value)

    ResolutionContext._resolve_inner_value = resolve_inner_value  # type: ignore[method-assign]
    try:
        yield
    finally:
        ResolutionContext._resolve_inner_value = original  # type: ignore[method-assign]
