"""Reading `defs.yaml` files with libyaml, for what Dagster reads with pure-Python PyYAML.

Dagster parses each declaration with a pure-Python loader that records where every value was
written (`file:line` in errors, ours and Dagster's); at 1,000 sources that parse is a fifth of
the load. libyaml composes the same nodes with the same start and end marks six times faster,
so `parse_with_source_positions` builds Dagster's `ValueAndSourcePositionTree` from them
directly. It takes only the plain shapes declarations are written in (mappings with scalar
keys, lists, tagged or untagged scalars); a file with anything else (an alias, a merge key,
`!!set`, a complex key) or one libyaml rejects is handed to Dagster's own parser, so unusual
files and every YAML error read exactly as they would without this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import yaml
from dagster.components.core import decl
from dagster_shared import yaml_utils
from dagster_shared.yaml_utils.source_position import (
    KeyPathSegment,
    LineCol,
    SourcePosition,
    SourcePositionTree,
    ValueAndSourcePositionTree,
)

# Dagster reads dates as strings (`start: 2026-11-01`), so the timestamp resolver goes.
_DAGSTER_IMPLICITS = [yaml_utils.YAML_TIMESTAMP_TAG]
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Type names from before the per-kind layout, so sources declared with them still load.
RENAMED_TYPES = {
    f"ingestion_platform.components.{old}.{name}": (
        f"ingestion_platform.sources.{kind}.component.{name}"
    )
    for old, kind, names in [
        ("sql_database", "sql", ["SqlDatabaseSource"]),
        ("rest_api", "api", ["RestApiSource"]),
        (
            "file_source",
            "files",
            ["LocalFileSource", "SftpFileSource", "S3FileSource"],
        ),
        ("kinesis_source", "kinesis", ["KinesisStreamSource"]),
        ("glue_job", "glue", ["GlueJobSource"]),
    ]
    for name in names
}


class _Loader(yaml.CSafeLoader):
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DAGSTER_IMPLICITS]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }


class _Unusual(Exception):
    """A shape this reader leaves to Dagster's own parser."""


def parse_with_source_positions(
    src: str,
    filename: str = "<string>",
    implicits_to_remove: Sequence[str] = _DAGSTER_IMPLICITS,
) -> list[ValueAndSourcePositionTree]:
    """`dagster_shared.yaml_utils.parse_yamls_with_source_position`, read by libyaml."""
    if list(implicits_to_remove) != _DAGSTER_IMPLICITS:
        return yaml_utils.parse_yamls_with_source_position(src, filename, implicits_to_remove)
    return [_renamed(document, filename) for document in _parse(src, filename)]


def _parse(src: str, filename: str) -> list[ValueAndSourcePositionTree]:
    # Python's reader refuses control characters with its own error; libyaml need not.
    if yaml.reader.Reader.NON_PRINTABLE.search(src):
        return yaml_utils.parse_yamls_with_source_position(src, filename, _DAGSTER_IMPLICITS)
    loader = _Loader(src)
    try:
        documents = []
        while loader.check_node():
            documents.append(_Reader(loader, filename).tree(loader.get_node()))
        return documents
    except (_Unusual, yaml.YAMLError):
        pass  # outside this block, so that Dagster's own error is not chained to libyaml's
    finally:
        loader.dispose()
    return yaml_utils.parse_yamls_with_source_position(src, filename, _DAGSTER_IMPLICITS)


def _renamed(document: ValueAndSourcePositionTree, filename: str) -> ValueAndSourcePositionTree:
    """The document with a pre-layout `type:` replaced by its new name, and a warning."""
    value = document.value
    old = value.get("type") if isinstance(value, dict) else None
    if isinstance(old, str) and old in RENAMED_TYPES:
        value["type"] = RENAMED_TYPES[old]
        warnings.warn(
            f"{filename}: type {old!r} is now {RENAMED_TYPES[old]!r}; it still loads, but "
            "rename it (docs/operations.md, 'Upgrading', has a one-line command)",
            FutureWarning,
            stacklevel=2,
        )
    return document


class _Reader:
    """One document's nodes as values with their positions, as Dagster's loader builds them."""

    def __init__(self, loader: _Loader, filename: str) -> None:
        self.loader = loader
        self.filename = filename
        self.seen: set[int] = set()

    def tree(self, node: yaml.Node) -> ValueAndSourcePositionTree:
        if id(node) in self.seen:  # an alias: Dagster's loader shares the anchor's value
            raise _Unusual
        self.seen.add(id(node))
        position = SourcePosition(
            filename=self.filename,
            start=LineCol(line=node.start_mark.line + 1, col=node.start_mark.column + 1),
            end=LineCol(line=node.end_mark.line + 1, col=node.end_mark.column + 1),
        )
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            return ValueAndSourcePositionTree(value, SourcePositionTree(position, {}))
        children: dict[KeyPathSegment, SourcePositionTree] = {}
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            items = []
            for index, item_node in enumerate(node.value):
                item = self.tree(item_node)
                items.append(item.value)
                children[index] = item.source_position_tree
            return ValueAndSourcePositionTree(items, SourcePositionTree(position, children))
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            mapping = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    raise _Unusual
                key, value = self.tree(key_node), self.tree(value_node)
                mapping[key.value] = value.value
                # A key's subtree sits where the key was written, holding its value's children.
                children[key.value] = SourcePositionTree(
                    key.source_position_tree.position, value.source_position_tree.children
                )
            return ValueAndSourcePositionTree(mapping, SourcePositionTree(position, children))
        raise _Unusual


@contextmanager
def libyaml_declarations() -> Iterator[None]:
    """While open, Dagster's component loader reads `defs.yaml` files with libyaml."""
    # The seam: decl.py calls `parse_yamls_with_source_position` by its module-level name for
    # every defs.yaml it reads. The replacement returns what the original does (tested in
    # test_definitions.py), so a concurrent reader sees no difference either.
    original = decl.parse_yamls_with_source_position
    decl.parse_yamls_with_source_position = parse_with_source_positions
    try:
        yield
    finally:
        decl.parse_yamls_with_source_position = original
