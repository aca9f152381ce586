"""The package layout keeps its promises: Dagster-free clients, no import cycles, old type names."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ingestion_platform.core.defs_yaml import RENAMED_TYPES, parse_with_source_positions

PACKAGE = Path(__file__).parents[1] / "ingestion_platform"


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__"
    )


CLIENTS = sorted(_module(path) for path in PACKAGE.glob("sources/*/connectors/*.py"))

_BLOCK_DAGSTER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"dagster", "dagster_dlt", "dagster_aws", "dagster_shared"}:
            raise ImportError(f"{name} is blocked: this client must not need Dagster")
sys.meta_path.insert(0, Block())
"""


def test_every_kind_has_its_clients_folder() -> None:
    kinds = {path.parent.name for path in PACKAGE.glob("sources/*/component.py")}
    assert kinds == {"api", "files", "glue", "kinesis", "mqtt", "nats", "rabbitmq", "sql"}
    assert {name.split(".")[2] for name in CLIENTS} == kinds


@pytest.mark.parametrize("client", CLIENTS)
def test_a_client_imports_with_dagster_blocked(client: str) -> None:
    code = _BLOCK_DAGSTER + f"import {client}\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]


def test_the_dagster_block_would_catch_a_client_that_imports_dagster() -> None:
    code = _BLOCK_DAGSTER + "import ingestion_platform.sources.sql.component"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "dagster is blocked: this client must not need Dagster" in done.stderr


def _imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


def test_no_module_imports_itself_round_a_cycle() -> None:
    paths = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph = {module: _imports(path, set(paths)) - {module} for module, path in paths.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append([*stack[stack.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_a_type_name_from_before_the_layout_loads_as_its_new_name_with_a_warning() -> None:
    old = "ingestion_platform.components.sql_database.SqlDatabaseSource"
    text = f"type: {old}\nattributes:\n  name: shop\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (document,) = parse_with_source_positions(text, filename="defs/shop/defs.yaml")
    assert document.value["type"] == "ingestion_platform.sources.sql.component.SqlDatabaseSource"
    assert [str(warning.message) for warning in caught] == [
        f"defs/shop/defs.yaml: type {old!r} is now "
        "'ingestion_platform.sources.sql.component.SqlDatabaseSource'; it still loads, but "
        "rename it (docs/operations.md, 'Upgrading', has a one-line command)"
    ]


@pytest.mark.parametrize("old", sorted(RENAMED_TYPES))
def test_every_renamed_type_exists_and_the_upgrade_command_renames_it(
    old: str, tmp_path: Path
) -> None:
    module, _, name = RENAMED_TYPES[old].rpartition(".")
    assert hasattr(__import__(module, fromlist=[name]), name)
    docs = (PACKAGE.parent / "docs" / "operations.md").read_text()
    command = docs.split("```bash\n")[-1].split("\n```")[0]
    defs = tmp_path / "ingestion_platform" / "defs" / "src"
    defs.mkdir(parents=True)
    (defs / "defs.yaml").write_text(f"type: {old}\n")
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert (defs / "defs.yaml").read_text() == f"type: {RENAMED_TYPES[old]}\n"
