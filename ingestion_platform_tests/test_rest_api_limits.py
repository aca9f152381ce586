"""The API's limits hold on every path (sensor, backfill, separate processes), checked at the
server, and every API failure is readable."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform_tests.music import CATALOG, DAY, SECRET
from ingestion_platform_tests.music import music_attributes as _attributes
from ingestion_platform_tests.sources import build_source, failure_message, materialize

ERROR = "ingestion_platform.sources.api.errors.ApiSourceError"
RATE = 5


@pytest.fixture(autouse=True)
def _private_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget files of this test only (tests in other workers use other servers anyway)."""
    monkeypatch.setenv("INGESTION_RATE_BUDGET_DIR", str(tmp_path / "budgets"))


def _size_attributes(**limits: Any) -> dict[str, Any]:
    attributes = _attributes(
        batch={"records": 40},
        limits={"page_size": 10, "max_page_size": 50, "give_up_after": "20s", **limits},
    )
    attributes["resources"][0]["window"] = {
        "start_param": "released_after",
        "cursor_path": "release_date",
        "ascending": True,
    }
    return attributes


def _albums_between(lower: str | None, upper: str) -> list[dict[str, Any]]:
    return [
        album
        for album in CATALOG.albums
        if (lower is None or album["release_date"] > lower) and album["release_date"] <= upper
    ]


def test_a_sensor_tick_spends_the_same_budget_as_runs(
    server: MusicApiServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    server.configure(rate_limit_per_second=RATE)
    defs = build_source(
        RestApiSource, tmp_path / "music", _size_attributes(requests_per_second=RATE)
    )
    (sensor,) = [s for s in defs.sensors or [] if s.name.endswith("__size_sensor")]
    result = sensor(dg.build_sensor_context(instance=instance))

    # Several full batches measured page by page, cut as one partition (core/backlog.py).
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    stats = server.stats()
    assert stats["by_path"]["/v1/browse/new-releases"] > 2 * RATE
    assert stats["over_limit"] == 0 and stats["served_429"] == 0
    assert stats["max_arrivals_in_any_1s"] <= RATE


def test_the_sensor_says_how_many_records_are_pending_and_when_max_wait_cuts(
    server: MusicApiServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    attributes = _size_attributes()
    attributes["batch"] = {"records": 1000, "max_wait": "2h"}
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    (sensor,) = [s for s in defs.sensors or [] if s.name.endswith("__size_sensor")]
    result = sensor(dg.build_sensor_context(instance=instance))

    assert isinstance(result, dg.SensorResult) and result.skip_reason is not None
    waiting_since = datetime.fromisoformat(json.loads(result.cursor or "{}")["new_releases"])
    cut_at = (waiting_since + timedelta(hours=2)).astimezone(UTC).strftime("%H:%M")
    assert result.skip_reason.skip_message == (
        f"less than 1,000 records pending: {len(CATALOG.albums)} of 1,000; "
        f"max_wait cuts at {cut_at} UTC"
    )


def test_the_first_size_slice_stops_reading_at_its_end(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    defs = build_source(RestApiSource, tmp_path / "music", _size_attributes())
    upper = sorted({album["release_date"] for album in CATALOG.albums})[1]
    key = f"..{upper}T00:00:00"
    instance.add_dynamic_partitions("music__records", [key])
    server.reset_stats()
    materialize(defs, partition_key=key, resources=resources, instance=instance)

    expected = _albums_between(None, upper)
    assert warehouse.count("music", "new_releases") == len(expected)
    pages = server.stats()["by_path"]["/v1/browse/new-releases"]
    # Pages of 10 up to the slice's end (and the page that crosses it), not the whole API.
    assert pages <= math.ceil(len(expected) / 10) + 1 < math.ceil(len(CATALOG.albums) / 10)


def _partition_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    return {
        event.partition: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[-1] == asset and event.partition
    }


def test_a_range_is_one_run_walking_its_windows_with_figures_per_partition(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    server.configure(rate_limit_per_second=RATE)
    attributes = _attributes(limits={"page_size": 50, "requests_per_second": RATE})
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    days = ["2026-01-02", "2026-01-03", "2026-01-04"]
    result = materialize(
        defs,
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        },
    )

    (run,) = instance.get_runs()
    assert run.run_id == result.run_id
    releases = _partition_metadata(result, "new_releases")
    tracks = _partition_metadata(result, "album_tracks")
    assert sorted(releases) == sorted(tracks) == days
    for day in days:
        next_day = f"2026-01-{int(day[-2:]) + 1:02d}"
        albums = CATALOG.releases_between(day, next_day)
        landed = warehouse.query(
            "select count(*) from music.new_releases where _batch_key = ?", (day,)
        )[0][0]
        assert releases[day]["dagster/row_count"] == landed == len(albums)
        track_count = sum(len(CATALOG.tracks_for(album["id"])) for album in albums)
        assert tracks[day]["dagster/row_count"] == track_count
        assert releases[day]["slice"] == f"{day}T00:00:00+00:00 .. {next_day}T00:00:00+00:00"
        # Each window's own requests: a page of releases and a page of tracks per album.
        assert releases[day]["pages"] == len(albums) + 1
    assert server.stats()["over_limit"] == 0
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    first = next(message for message in logged if message.startswith(f"music {days[0]}: "))
    assert f"new_releases {len(CATALOG.releases_between(days[0], days[1]))} rows" in first


RUN_ONE = textwrap.dedent(
    """
    import sys, yaml, dagster as dg
    from pathlib import Path
    from ingestion_platform_tests.sources import build_source
    from ingestion_platform.sources.api.component import RestApiSource
    from ingestion_platform.core.warehouse import WarehouseResource

    folder, warehouse, day = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    attributes = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    defs = build_source(RestApiSource, folder, attributes)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets), instance=instance, partition_key=day,
            resources={"warehouse": WarehouseResource(path=warehouse)},
        )
    sys.exit(0 if result.success else 1)
    """
)


def test_runs_in_separate_processes_share_one_budget(
    server: MusicApiServer, tmp_path: Path, warehouse_path: Path
) -> None:
    server.configure(rate_limit_per_second=RATE)
    folder = tmp_path / "music"
    build_source(
        RestApiSource, folder, _attributes(limits={"page_size": 50, "requests_per_second": RATE})
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_ONE, str(folder), str(warehouse_path), day],
            env=environment,
        )
        for day in ("2026-01-02", "2026-01-03", "2026-01-04")
    ]
    assert [run.wait(timeout=180) for run in runs] == [0, 0, 0]

    stats = server.stats()
    assert stats["by_path"]["/v1/albums/{id}/tracks"] > 3 * RATE
    assert stats["over_limit"] == 0 and stats["served_429"] == 0
    assert stats["max_arrivals_in_any_1s"] <= RATE


@pytest.fixture
def stopped_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The address of a music API that has stopped: nothing listens there any more."""
    with MusicApiServer(catalog=CATALOG, client_secret=SECRET).start() as running:
        url = running.url
    monkeypatch.setenv("MUSIC_API_URL", url)
    monkeypatch.setenv("MUSIC_API_CLIENT_ID", "demo-client")
    monkeypatch.setenv("MUSIC_API_CLIENT_SECRET", SECRET)
    yield url


def test_a_stopped_token_endpoint_is_retried_then_given_up_on_readably(
    stopped_server: str, tmp_path: Path, resources: dict, instance
) -> None:
    attributes = _attributes(limits={"page_size": 50, "give_up_after": "2s"})
    result = build_and_fail(tmp_path, attributes, resources, instance)

    message = failure_message(result)
    prefix = (
        f"{ERROR}: source 'music' ({tmp_path / 'music' / 'defs.yaml'}): gave up on "
        f"{stopped_server}/api/token after "
    )
    assert message.startswith(prefix), message
    attempts, rest = message.removeprefix(prefix).split(" attempts in ", 1)
    assert int(attempts) >= 3
    assert rest.split("s", 1)[1] == (
        " (last: connection refused). Fix: check that the API answers at base_url (and "
        "auth.token_url); retries stop after limits.give_up_after."
    )


def build_and_fail(
    tmp_path: Path, attributes: dict[str, Any], resources: dict, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    return materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )


def _run_sources_at_once(
    folders: list[Path], warehouse_path: Path, day: str = "2026-01-02"
) -> list[int]:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_ONE, str(folder), str(warehouse_path), day],
            env=environment,
        )
        for folder in folders
    ]
    return [run.wait(timeout=180) for run in runs]


def test_two_sources_on_one_api_credential_share_its_budget(
    server: MusicApiServer, tmp_path: Path, warehouse_path: Path
) -> None:
    server.configure(rate_limit_per_second=RATE)
    limits = {"page_size": 50, "requests_per_second": RATE}
    folders = [tmp_path / "music", tmp_path / "tunes"]
    for folder in folders:
        build_source(RestApiSource, folder, _attributes(limits=limits))

    assert _run_sources_at_once(folders, warehouse_path) == [0, 0]

    stats = server.stats()
    assert stats["by_path"]["/v1/albums/{id}/tracks"] > 2 * RATE
    assert stats["over_limit"] == 0 and stats["served_429"] == 0
    assert stats["max_arrivals_in_any_1s"] <= RATE


def test_a_budget_is_one_per_host_and_credential_or_rate_limit_key(
    server: MusicApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def budget_of(name: str, **limits: Any) -> Path:
        source = RestApiSource.resolve_from_yaml(
            json.dumps(_attributes(limits={"requests_per_second": RATE, **limits}))
        )
        context = SourceContext(name, str(tmp_path / name / "defs.yaml"))
        session, _ = source.session(context)
        return session._budget._path  # type: ignore[union-attr]

    shared = budget_of("music")
    assert budget_of("tunes") == shared
    monkeypatch.setenv("MUSIC_API_CLIENT_ID", "another-client")
    other_key = budget_of("tunes")
    assert other_key != shared
    # The file is named by a hash: never by the secret or the client.
    assert SECRET not in other_key.name and "another-client" not in other_key.name
    assert budget_of("a", rate_limit_key="team-key") == budget_of("b", rate_limit_key="team-key")
    assert budget_of("a", rate_limit_key="team-key") not in (shared, other_key)
