"""API sources batched by record count: a sensor pages forward and cuts a slice per N records."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.backlog import MAX_BATCHES_PER_RUN
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform_tests.music import CATALOG
from ingestion_platform_tests.music import music_attributes as _attributes
from ingestion_platform_tests.sources import build_source, materialize

THRESHOLD = 40


def _size_attributes() -> dict:
    attributes = _attributes(batch={"records": THRESHOLD})
    attributes["resources"][0]["window"] = {
        "start_param": "released_after",
        "cursor_path": "release_date",
        "ascending": True,
    }
    return attributes


def _expected_cuts() -> list[tuple[str | None, str]]:
    """Slices the way a person would cut them: whole release days, at least 40 albums each."""
    per_day: dict[str, int] = {}
    for album in CATALOG.albums:
        per_day[album["release_date"]] = per_day.get(album["release_date"], 0) + 1
    cuts, lower, count = [], None, 0
    for day in sorted(per_day):
        count += per_day[day]
        if count >= THRESHOLD:
            cuts.append((lower, day))
            lower, count = day, 0
    return cuts


def _key(lower: str | None, upper: str) -> str:
    render = lambda day: f"{date.fromisoformat(day).isoformat()}T00:00:00"  # noqa: E731
    return f"{render(lower) if lower else ''}..{render(upper)}"


def test_sensor_cuts_whole_slices_of_n_records_and_each_lands_exactly(
    server,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance,
) -> None:
    defs = build_source(RestApiSource, tmp_path / "music", _size_attributes())
    (sensor,) = [s for s in defs.sensors or [] if s.name.endswith("__size_sensor")]
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)

    # Every full batch pending at once: behind, so one slice covers them (core/backlog.py).
    full = _expected_cuts()[:MAX_BATCHES_PER_RUN]
    assert len(full) > 1
    expected = [(full[0][0], full[-1][1])]
    keys = [request.partition_key for request in result.run_requests]
    assert keys == [_key(lower, upper) for lower, upper in expected]
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    for key, (lower, upper) in zip(keys, expected, strict=True):
        materialize(defs, partition_key=key, resources=resources, instance=instance)
        albums = sorted(
            album["id"]
            for album in CATALOG.albums
            if (lower is None or album["release_date"] > lower) and album["release_date"] <= upper
        )
        landed = warehouse.query(
            "select id from music.new_releases where _batch_key = ? order by id", (key,)
        )
        assert [row[0] for row in landed] == albums
        assert len(albums) >= THRESHOLD

    # A replay reads the same slice again: same rows, no duplicates.
    before = warehouse.query("select id, _batch_key from music.new_releases order by id")
    materialize(defs, partition_key=keys[0], resources=resources, instance=instance)
    assert warehouse.query("select id, _batch_key from music.new_releases order by id") == before


def test_a_size_batch_without_an_ordered_window_is_a_declaration_error(tmp_path: Path) -> None:
    attributes = _size_attributes()
    attributes["resources"][0]["window"]["ascending"] = False
    with pytest.raises(ValueError) as raised:
        build_source(RestApiSource, tmp_path / "music", attributes)
    assert "resources: a size batch needs exactly one resource with a `window:`" in str(
        raised.value
    )
