"""The API lag measure: closed windows not landed, or records past the newest cut at the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingestion_platform.core.declaration import SourceContext, SourceFailure
from ingestion_platform.core.lag import LagMeasure
from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform.sources.api.lag import api_lag_measures
from ingestion_platform_tests.music import CATALOG, SECRET
from ingestion_platform_tests.music import music_attributes as _attributes
from ingestion_platform_tests.sources import build_source, materialize

THRESHOLD = 40


@pytest.fixture(autouse=True)
def _private_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTION_RATE_BUDGET_DIR", str(tmp_path / "budgets"))


def _size_attributes(**limits: Any) -> dict[str, Any]:
    attributes = _attributes(batch={"records": THRESHOLD})
    attributes["limits"].update(limits)
    attributes["resources"][0]["window"] = {
        "start_param": "released_after",
        "cursor_path": "release_date",
        "ascending": True,
    }
    return attributes


def _measures(tmp_path: Path, attributes: dict, defs: dg.Definitions) -> dict[str, LagMeasure]:
    component = RestApiSource.resolve_from_yaml(json.dumps(attributes))
    source = SourceContext("music", str(tmp_path / "music" / "defs.yaml"))
    (fetch,) = defs.assets  # type: ignore[misc]
    keys = list(fetch.keys)
    measures = api_lag_measures(component, source, keys, fetch.partitions_def)
    return {key.path[-1]: measure for key, measure in measures.items()}


def test_a_time_batch_counts_closed_windows_not_landed(
    server: MusicApiServer, tmp_path: Path, resources: dict, instance
) -> None:
    attributes = _attributes()
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    materialize(defs, partition_key="2026-01-02", resources=resources, instance=instance)

    lag = _measures(tmp_path, attributes, defs)["new_releases"](instance)

    # Every day from the 3rd (after the first landing) to yesterday closed and did not land.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = datetime(2026, 1, 3, tzinfo=UTC)
    assert (lag.waiting, lag.unit) == ((today - first).days, "windows")
    assert lag.oldest_waiting_at == first


def test_a_size_batch_counts_records_past_the_newest_cut_up_to_one_batch(
    server: MusicApiServer, tmp_path: Path, instance
) -> None:
    attributes = _size_attributes()
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    (fetch,) = defs.assets  # type: ignore[misc]
    measure = _measures(tmp_path, attributes, defs)["new_releases"]
    cut = "2026-01-08"
    instance.add_dynamic_partitions(
        fetch.partitions_def.name,  # type: ignore[union-attr]
        ["..2026-01-05T00:00:00", f"2026-01-05T00:00:00..{cut}T00:00:00"],
    )

    lag = measure(instance)

    after = sorted(a["release_date"] for a in CATALOG.albums if a["release_date"] > cut)
    assert len(after) > THRESHOLD
    assert (lag.waiting, lag.unit, lag.detail) == (THRESHOLD, "records", {"capped": 1})
    assert lag.oldest_waiting_at == datetime.fromisoformat(after[0]).replace(tzinfo=UTC)


@pytest.fixture
def stopped_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with MusicApiServer(catalog=CATALOG, client_secret=SECRET).start() as running:
        url = running.url
    monkeypatch.setenv("MUSIC_API_URL", url)
    monkeypatch.setenv("MUSIC_API_CLIENT_ID", "demo-client")
    monkeypatch.setenv("MUSIC_API_CLIENT_SECRET", SECRET)
    yield url


def test_an_unreachable_api_fails_the_measure_naming_the_source(
    stopped_server: str, tmp_path: Path, instance
) -> None:
    attributes = _size_attributes(give_up_after="1s")
    defs = build_source(RestApiSource, tmp_path / "music", attributes)

    with pytest.raises(SourceFailure) as failure:
        _measures(tmp_path, attributes, defs)["new_releases"](instance)

    message = str(failure.value)
    assert message.startswith(
        f"source 'music' ({tmp_path / 'music' / 'defs.yaml'}): lag not measured: gave up on "
        f"{stopped_server}/api/token after "
    ), message
    assert SECRET not in message
