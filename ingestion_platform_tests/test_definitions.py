"""The code location loads with no source reachable and no secret set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).parents[1]

LIST_DEFINITIONS = """
import json
from ingestion_platform.definitions import defs
loaded = defs()
graph = loaded.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
    "schedules": sorted(s.name for s in loaded.schedules or []),
    "sensors": sorted(s.name for s in loaded.sensors or []),
}))
"""


def test_definitions_load_without_services_secrets_or_data(tmp_path: Path) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MUSIC_API", "INGESTION_WAREHOUSE"))
    }
    environment["PYTHONPATH"] = str(PROJECT)
    completed = subprocess.run(
        [sys.executable, "-c", LIST_DEFINITIONS],
        cwd=tmp_path,  # no data/ folder, no demo database, no warehouse
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    listed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert listed == {
        "assets": [
            "music/album_tracks",
            "music/new_releases",
            "shop/customers",
            "shop/orders",
            "shop_events/order_events",
        ],
        "schedules": ["music__schedule", "shop__schedule"],
        "sensors": ["shop_events__size_sensor"],
    }
    assert not (tmp_path / "data").exists()
