"""Every source declaration shown in docs/ loads as a real one, so the docs cannot drift.

Each ```yaml block with a top-level `type:` is written, alone, into a fresh project as
`defs/<source>/defs.yaml` (the source named by the block's `# defs/<source>/defs.yaml`
comment) and loaded the way the code location loads its folder, with none of the
variables it names set: a typo, an unknown field or a value the component refuses fails
here, naming the page and the block's line.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ingestion_platform.definitions import load_declared_sources, platform_definitions

DOCS = Path(__file__).parents[1] / "docs"
# A fence may be indented (inside a list item); its closing fence has the same indent.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```yaml[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
SOURCE_NAME = re.compile(r"^#\s*defs/(?P<name>\w+)/defs\.ya?ml\s*$", re.M)
ENV_NAME = re.compile(r"\{\s*env:\s*(?P<name>\w+)\s*\}")
SOURCE_TYPES = {
    "ingestion_platform.sources.sql.component.SqlDatabaseSource",
    "ingestion_platform.sources.api.component.RestApiSource",
    "ingestion_platform.sources.files.component.SftpFileSource",
    "ingestion_platform.sources.files.component.LocalFileSource",
    "ingestion_platform.sources.files.component.S3FileSource",
    "ingestion_platform.sources.kinesis.component.KinesisStreamSource",
    "ingestion_platform.sources.glue.component.GlueJobSource",
    "ingestion_platform.sources.nats.component.NatsJetStreamSource",
    "ingestion_platform.sources.mqtt.component.MqttSource",
    "ingestion_platform.sources.rabbitmq.component.RabbitMqSource",
}


@dataclass(frozen=True)
class Example:
    page: str  # relative to docs/
    line: int  # of the opening fence
    source: str
    text: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def docs_examples(docs: Path = DOCS) -> list[Example]:
    """The ```yaml blocks of every page whose text declares a source (a top-level `type:`)."""
    examples = []
    for page in sorted(docs.rglob("*.md")):
        markdown = page.read_text()
        for fence in FENCE.finditer(markdown):
            body = textwrap.dedent(fence.group("body"))
            if not re.search(r"^type:", body, re.M):
                continue
            named = SOURCE_NAME.search(body)
            examples.append(
                Example(
                    page=page.relative_to(docs).as_posix(),
                    line=markdown.count("\n", 0, fence.start()) + 1,
                    source=named.group("name") if named else "example",
                    text=body,
                )
            )
    return examples


EXAMPLES = docs_examples()


def _load(example: Example, project: Path, index: int) -> dg.Definitions:
    """The example as the only declaration of a project of its own, loaded as Dagster would."""
    package = f"docs_example_{index}"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{package}"\nversion = "0"\n[tool.dg]\ndirectory_type = "project"\n'
        f'[tool.dg.project]\nroot_module = "{package}"\n'
        'registry_modules = ["ingestion_platform.sources.*.component"]\n'
    )
    folder = project / package / "defs" / example.source
    folder.mkdir(parents=True)
    for module in (project / package, project / package / "defs"):
        (module / "__init__.py").write_text("")
    (folder / "defs.yaml").write_text(example.text)
    sys.path.insert(0, str(project))
    try:
        return load_declared_sources(project / package)
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[name]


@pytest.mark.parametrize(
    ("index", "example"), list(enumerate(EXAMPLES)), ids=[e.where for e in EXAMPLES]
)
def test_each_docs_example_loads_as_a_declaration(
    index: int, example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Definitions load without secrets; an example that needed one at load would mislead.
    for name in ENV_NAME.findall(example.text):
        monkeypatch.delenv(name, raising=False)
    try:
        declared = _load(example, tmp_path, index)
        graph = platform_definitions(declared).resolve_asset_graph()
    except Exception as error:  # noqa: BLE001 - the page and line matter more than the type
        chain = []
        while error is not None and len(chain) < 6:
            chain.append(f"{type(error).__name__}: {error}")
            error = error.__cause__ or error.__context__
        # `…/defs.yaml:14` in Dagster's and our errors, as the page's own line.
        on_page = re.sub(
            r"\S*/defs\.yaml:(\d+)",
            lambda m: f"docs/{example.page}:{example.line + int(m.group(1))}",
            "\n".join(chain),
        )
        pytest.fail(
            f"{example.where}: this YAML example does not load as a declaration:\n{on_page}",
            pytrace=False,
        )
    sources = {key.path[0] for key in graph.get_all_asset_keys()}
    document = yaml.safe_load(example.text)
    attributes = document.get("attributes") or {}
    if document["type"].endswith(".SqlDatabaseSource") and "tables" not in attributes:
        # Without `tables:` the assets come from `dg utils refresh-defs-state`, not read here.
        assert sources <= {example.source}, example.where
    else:
        assert sources == {example.source}, f"{example.where}: no assets of {example.source}"


def test_the_docs_show_every_source_type() -> None:
    shown = {yaml.safe_load(example.text)["type"] for example in EXAMPLES}
    assert shown == SOURCE_TYPES


def test_a_broken_example_is_caught_and_named(tmp_path: Path) -> None:
    # The finder and the loader together: a docs page with an unknown setting fails loading.
    page = tmp_path / "docs" / "sources" / "broken.md"
    page.parent.mkdir(parents=True)
    page.write_text(
        "# Broken\n\nText.\n\n  ```yaml\n  # defs/shop/defs.yaml\n"
        "  type: ingestion_platform.sources.sql.component.SqlDatabaseSource\n"
        "  attributes:\n    connection: sqlite:///shop.sqlite\n"
        "    tables: [{name: orders, cursor: id}]\n    batch: {rows: 10}\n"
        "    chunk_sise: 5\n  ```\n"
    )
    (example,) = docs_examples(tmp_path / "docs")
    assert (example.where, example.source) == ("docs/sources/broken.md:5", "shop")
    with pytest.raises(Exception) as raised:
        _load(example, tmp_path / "project", 0)
    chain = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("chunk_sise" in text for text in chain)
