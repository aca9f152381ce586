"""The code locations load with no source reachable and no secret set, and the project a
user deploys holds only the user's sources, never the demo's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert listed == {
        "assets": [
            "clicks/events",
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
    return {
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(key.to_user_string() for key in graph.asset_check_keys),
        "schedules": sorted((s.name, s.cron_schedule) for s in defs.schedules or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
    }

folder = Path(sys.argv[1])
print(json.dumps([
    listed(load_declared_sources(folder)),
    listed(dg.load_from_defs_folder(path_within_project=folder)),
]))
"""


def test_sources_load_as_dagsters_own_loader_loads_them(tmp_path: Path) -> None:
    # `load_declared_sources` hands Dagster's component tree its declarations up front, so that
    # 1,000 sources load in linear time; what it loads must not differ.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "loaders"\nversion = "0"\n[tool.dg]\ndirectory_type = "project"\n'
        '[tool.dg.project]\nroot_module = "loaders"\n'
        'registry_modules = ["ingestion_platform.components.*"]\n'
    )
    package = tmp_path / "loaders"
    for folder in (package, package / "defs"):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    for source in ("shop", "shop_events", "music", "inbox"):
        (package / "defs" / source).mkdir()
        demo = PROJECT / "ingestion_platform" / "demo" / "defs" / source / "defs.yaml"
        (package / "defs" / source / "defs.yaml").write_text(demo.read_text())
    completed = subprocess.run(
        [sys.executable, "-c", COMPARE_LOADERS, str(package)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{PROJECT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ours, dagsters = json.loads(completed.stdout.strip().splitlines()[-1])
    assert ours == dagsters
    assert ours["schedules"] == [["music__schedule", "0 0 * * *"], ["shop__schedule", "0 0 * * *"]]
