"""The code locations load with no source reachable and no secret set, and the project a
user deploys holds only the user's sources, never the demo's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dagster.components.core import decl
from dagster.components.resolved.context import ResolutionContext
from dagster_shared.yaml_utils import parse_yamls_with_source_position

from ingestion_platform.core.defs_yaml import libyaml_declarations, parse_with_source_positions
from ingestion_platform.core.plain_templates import plain_strings_unrendered

PROJECT = Path(__file__).parents[1]

LIST_DEFINITIONS = """
import json, sys, importlib
defs = importlib.import_module(sys.argv[1]).defs
loaded = defs()
graph = loaded.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
    "schedules": sorted(s.name for s in loaded.schedules or []),
    "sensors": sorted(s.name for s in loaded.sensors or []),
}))
"""


def _list(module: str, cwd: Path) -> dict[str, list[str]]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(
            ("MUSIC_API", "INGESTION_WAREHOUSE", "AWS_", "PARTNER_", "CLICKS", "DEMO_")
        )
    }
    environment["PYTHONPATH"] = str(PROJECT)
    completed = subprocess.run(
        [sys.executable, "-c", LIST_DEFINITIONS, module],
        cwd=cwd,  # no data/ folder, no demo database, no warehouse
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_deployed_code_location_holds_only_the_users_sources(tmp_path: Path) -> None:
    assert _list("ingestion_platform.definitions", tmp_path) == {
        "assets": [],
        "schedules": [],
        "sensors": [],
    }


def test_the_demo_location_loads_without_services_secrets_or_data(tmp_path: Path) -> None:
    listed = _list("ingestion_platform.demo.definitions", tmp_path)
    # Each source kind adds its `<source>__lag` sensor (core/lag.py); these kinds have theirs.
    lag = {name for name in listed["sensors"] if name.endswith("__lag")}
    assert {"music__lag", "shop__lag", "shop_events__lag"} <= lag
    listed["sensors"] = [name for name in listed["sensors"] if name not in lag]
    assert listed == {
        "assets": [
            "clicks/events",
            "fleet_jetstream/readings",
            "fleet_mqtt/readings",
            "fleet_rabbitmq/readings",
            "inbox/drops",
            "music/album_tracks",
            "music/new_releases",
            "orders_glue/orders",
            "partner_files/orders",
            "partner_files_latin1/orders",
            "partner_s3/orders",
            "shop/customers",
            "shop/orders",
            "shop_events/order_events",
        ],
        "schedules": ["music__schedule", "orders_glue__schedule", "shop__schedule"],
        "sensors": [
            "clicks__size_sensor",
            "fleet_jetstream__size_sensor",
            "fleet_mqtt__size_sensor",
            "fleet_rabbitmq__size_sensor",
            "inbox__drops__sensor",
            "partner_files__orders__sensor",
            "partner_files_latin1__orders__sensor",
            "partner_s3__orders__sensor",
            "shop_events__size_sensor",
        ],
    }
    assert not (tmp_path / "data").exists()


COMPARE_LOADERS = """
import json, sys
from pathlib import Path
import dagster as dg
from ingestion_platform.definitions import load_declared_sources, platform_definitions

def listed(declared):
    defs = platform_definitions(declared)
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        # The metadata holds each component as resolved from YAML (so the type of every
        # attribute) and the `defs.yaml` line it was declared on.
        assets[key.to_user_string()] = {
            "description": node.description,
            "metadata": {name: repr(value) for name, value in node.metadata.items()},
            "tags": dict(node.tags),
            "group": node.group_name,
            "partitions": repr(node.partitions_def),
            "freshness": repr(node.freshness_policy),
        }
    return {
        "assets": assets,
        "checks": {
            key.to_user_string(): graph.get_check_spec(key).description
            for key in graph.asset_check_keys
        },
        "schedules": sorted(
            (s.name, s.cron_schedule, str(s.default_status), s.description or "")
            for s in defs.schedules or []
        ),
        "sensors": sorted(
            (s.name, s.minimum_interval_seconds, str(s.default_status), s.description or "")
            for s in defs.sensors or []
        ),
        "jobs": sorted(job.name for job in defs.resolve_all_job_defs()),
    }

folder = Path(sys.argv[1])
print(json.dumps([
    listed(load_declared_sources(folder)),
    listed(dg.load_from_defs_folder(path_within_project=folder)),
]))
"""
# Written with Windows line endings, a quoted number and a template, which the fast path
# reads itself or hands to Dagster.
TEMPLATED_SHOP = (
    "# A copy of the demo shop whose values go through every path of the fast loader.\r\n"
    "type: ingestion_platform.sources.sql.component.SqlDatabaseSource\r\n"
    "attributes:\r\n"
    "  connection: \"sqlite:///{{ 'data' }}/demo/shop.sqlite\"\r\n"
    "  cursor: updated_at\r\n"
    "  tables:\r\n"
    "    - name: customers\r\n"
    "      primary_key: [id]\r\n"
    "  batch: {every: day, start: 2026-11-01}\r\n"
    '  sensor_interval_seconds: "45"\r\n'
    "  automation: stopped\r\n"
)


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "loaders"\nversion = "0"\n[tool.dg]\ndirectory_type = "project"\n'
        '[tool.dg.project]\nroot_module = "loaders"\n'
        'registry_modules = ["ingestion_platform.sources.*.component"]\n'
    )
    package = tmp_path / "loaders"
    for folder in (package, package / "defs"):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    return package


def _run(script: str, *args: str, cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{PROJECT}"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()[-1]


def test_sources_load_as_dagsters_own_loader_loads_them(tmp_path: Path) -> None:
    # `load_declared_sources` hands Dagster's component tree its declarations up front, reads
    # them with libyaml and skips Jinja for strings without a template, so that 1,000 sources
    # load in linear time; what it loads must not differ, down to each attribute's value and
    # the line each component is declared on.
    package = _project(tmp_path)
    for demo in sorted((PROJECT / "ingestion_platform" / "demo" / "defs").glob("*/defs.yaml")):
        (package / "defs" / demo.parent.name).mkdir()
        (package / "defs" / demo.parent.name / "defs.yaml").write_text(demo.read_text())
    (package / "defs" / "templated_shop").mkdir()
    (package / "defs" / "templated_shop" / "defs.yaml").write_bytes(TEMPLATED_SHOP.encode())
    ours, dagsters = json.loads(_run(COMPARE_LOADERS, str(package), cwd=tmp_path))
    assert ours == dagsters
    assert ours["schedules"][-2:] == [
        ["shop__schedule", "0 0 * * *", "DefaultScheduleStatus.RUNNING", ours["schedules"][-2][3]],
        [
            "templated_shop__schedule",
            "0 0 * * *",
            "DefaultScheduleStatus.STOPPED",
            ours["schedules"][-1][3],
        ],
    ]
    assert len(ours["assets"]) == 15  # the demo's 14 and the templated shop


COMPARE_ERRORS = """
import json, sys
from pathlib import Path
import dagster as dg
from ingestion_platform.definitions import load_declared_sources

def failure(load):
    try:
        load()
    except Exception as error:
        # Each distinct error of the chain: Dagster's own loader reads a file that does not
        # parse again while it reports it, so its chain holds the same error three times.
        chain = {}
        while error is not None:
            chain[f"{type(error).__name__}: {error}"] = None
            error = error.__cause__ or error.__context__
        return list(chain)
    return None

folder, defs_file = Path(sys.argv[1]), Path(sys.argv[2])
results = []
for declaration in json.loads(sys.argv[3]):
    defs_file.write_text(declaration)
    results.append([
        failure(lambda: load_declared_sources(folder)),
        failure(lambda: dg.load_from_defs_folder(path_within_project=folder)),
    ])
print(json.dumps(results))
"""
SHOP_HEAD = (
    "type: ingestion_platform.sources.sql.component.SqlDatabaseSource\n"
    "attributes:\n"
    "  connection: sqlite:///shop.sqlite\n"
)
BROKEN = [
    # Dagster's schema check, pointing at the line.
    SHOP_HEAD + "  tables:\n    - name: orders\n      cursor: id\n  batch:\n    rows: -5\n",
    # Our own check, naming `file:line` through the positions the YAML reader recorded.
    SHOP_HEAD + "  tables:\n    - {name: a, cursor: id}\n    - {name: a, cursor: id}\n"
    "  batch: {rows: 5}\n",
    # A template naming nothing in scope, which Dagster reports with the offending line.
    SHOP_HEAD + "  cursor: '{{ nothing.here }}'\n  tables: [{name: a}]\n  batch: {rows: 5}\n",
    # YAML that does not parse, and YAML the fast reader leaves to Dagster's.
    SHOP_HEAD + "  tables: [{name: a, cursor: id}\n  batch: {rows: 5}\n",
    SHOP_HEAD + "  base: &base {name: a, cursor: id}\n  tables: [{<<: *base, cursor: x}]\n"
    "  batch: {rows: 5}\n",
]


def test_broken_declarations_fail_as_with_dagsters_own_loader(tmp_path: Path) -> None:
    package = _project(tmp_path)
    (package / "defs" / "orders").mkdir()
    defs_file = package / "defs" / "orders" / "defs.yaml"
    results = json.loads(
        _run(COMPARE_ERRORS, str(package), str(defs_file), json.dumps(BROKEN), cwd=tmp_path)
    )
    for (ours, dagsters), declaration in zip(results, BROKEN, strict=True):
        assert ours == dagsters, declaration
    duplicate_table = "\n".join(results[1][0])
    assert "loaders/defs/orders/defs.yaml:6: tables[1].name: table 'a' is declared twice" in (
        duplicate_table
    )
    assert results[4][0] is not None  # a merge key is not a table setting


# The two Dagster names `load_declared_sources` swaps while it runs, and what they must answer.
YAML_SNIPPETS = [
    "",
    "---\n---\n",
    "a: 1\n---\nb: [1, 2, {c: d}]\n...\n---\n",
    "k: |\n  line1\n  line2\n\nj: >-\n  folded\n  text\nz: 3\n",
    "a: 1\r\nb:\r\n  - x\r\n  - 'y'\r\n",
    'name: "héllo wörld"\nsecond: ünïcode\n',
    "a: 1\nb: 2\na: 3\n",
    "i: 10\nf: 1.5\nb: yes\nn: ~\nd: 2026-11-01\nt: !!timestamp 2026-11-01\ns: !!str 5\n",
    "bin: !!binary aGVsbG8=\nhex: 0x1F\ninf: .inf\n'a b': 1\n1: int key\ntrue: bool key\n",
    "{a: [1, 2], b: {c: null}}\n",
    "a: &x {b: 1}\nc: *x\n",
    "a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n",
    "s: !!set {a, b}\n",
    "? [a, b]\n: c\n",
    "a: b: c\n",
    "a:\n  - b\n c: d\n",
    "a:\n\t- b\n",
    "a: \x07b\n",
    "a: !custom b\n",
    "just a string\n",
]


def _outcome(function: Callable[..., object], *args: object) -> object:
    """What `function(*args)` returns, or the error it raises as text."""
    try:
        return function(*args)
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def test_defs_yaml_is_read_as_dagsters_own_reader_reads_it() -> None:
    documents = {
        str(path): path.read_text()
        for path in PROJECT.glob("ingestion_platform/demo/defs/*/*.yaml")
    }
    documents.update({f"snippet_{index}.yaml": text for index, text in enumerate(YAML_SNIPPETS)})
    for name, text in documents.items():
        ours = _outcome(parse_with_source_positions, text, name)
        dagsters = _outcome(parse_yamls_with_source_position, text, name)
        assert ours == dagsters, name


PLAIN_STRINGS = [
    *("a", "30", "-5", "1e3", "1_000", "0x1F", "True", "None", "none", "[1, 2]", "(1,)"),
    *("'q'", "a\r\nb", "a\rb\r", "trail\n", "trail\n\n", "\n", " 5", "5 ", "2026-11-01"),
    *("sqlite:///data/demo/shop.sqlite", "1 + 1", "b'x'", "...", "1j", "nan", "%}", "a}b"),
    *("(" * 200 + ")" * 200, "-" * 5000 + "1", "9" * 5000, "é", "line one\nline two\n"),
]


def test_strings_without_a_template_resolve_as_jinja_renders_them() -> None:
    context = ResolutionContext.default()
    values = [*PLAIN_STRINGS, "{{ 1 + 1 }}", "{{ nothing }}", "", {"nested": ["30", "x"]}]
    dagsters = [_outcome(context.resolve_value, value) for value in values]
    with plain_strings_unrendered():
        ours = [_outcome(context.resolve_value, value) for value in values]
    assert ours == dagsters
    assert [type(value) for value in ours] == [type(value) for value in dagsters]
    assert ours[1] == 30 and ours[-1] == {"nested": [30, "x"]}


def test_the_names_swapped_while_loading_are_the_ones_dagster_calls() -> None:
    # If an upgrade renames or stops calling them, the swaps would silently do nothing.
    assert (
        "parse_yamls_with_source_position"
        in decl.build_component_decl_from_yaml_file.__code__.co_names
    )
    assert decl.parse_yamls_with_source_position is parse_yamls_with_source_position
    assert "_resolve_inner_value" in ResolutionContext.resolve_value.__code__.co_names
    original = ResolutionContext._resolve_inner_value
    with libyaml_declarations(), plain_strings_unrendered():
        assert decl.parse_yamls_with_source_position is parse_with_source_positions
        assert ResolutionContext._resolve_inner_value is not original
    assert decl.parse_yamls_with_source_position is parse_yamls_with_source_position
    assert ResolutionContext._resolve_inner_value is original


def test_every_demo_asset_shows_the_schedule_or_sensor_that_lands_it() -> None:
    """What the UI's asset page lists under Automation (it finds a schedule only through a job
    other than the implicit asset job)."""
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.remote_representation.handle import RepositoryHandle

    from ingestion_platform.demo.definitions import defs as demo_defs

    repository = demo_defs().get_repository_def()
    remote = RemoteRepository(
        RepositorySnap.from_def(repository),
        RepositoryHandle.for_test(location_name="demo", repository_name=repository.name),
        auto_materialize_use_sensors=True,
    )
    shown = {
        key.to_user_string(): sorted(
            [s.name for s in remote.get_schedules_targeting(key)]
            + [s.name for s in remote.get_sensors_targeting(key)]
        )
        for key in repository.asset_graph.get_all_asset_keys()
    }
    assert shown["shop/orders"] == ["shop__schedule"]
    assert shown["shop_events/order_events"] == ["shop_events__size_sensor"]
    assert shown["partner_files/orders"] == ["partner_files__orders__sensor"]
    assert shown["clicks/events"] == ["clicks__size_sensor"]
    assert {key: names for key, names in shown.items() if len(names) != 1} == {}
    assert all(names[0].split("__")[0] == key.split("/")[0] for key, names in shown.items())


def test_the_component_type_docs_seam_is_where_dagster_looks_for_it() -> None:
    """An upgrade that renames or moves the seam fails here, not silently in every load."""
    import inspect

    from dagster.components.core import defs_module, load_defs

    from ingestion_platform.definitions import component_type_docs_skipped

    assert list(inspect.signature(load_defs.get_library_json_enriched_defs).parameters) == ["tree"]
    # The root component imports it by name at each call, so the swap reaches it.
    assert "get_library_json_enriched_defs" in inspect.getsource(
        defs_module.ComponentRootComponent.build_defs
    )
    original = load_defs.get_library_json_enriched_defs
    with component_type_docs_skipped():
        skipped = load_defs.get_library_json_enriched_defs(None)
    assert load_defs.get_library_json_enriched_defs is original
    assert skipped.metadata == {}
