"""API sources against the local music API over real HTTP: complete, exact and within limits."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.music_api import MusicApiServer
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform.sources.api.connectors.page_guard import PageGuard
from ingestion_platform.sources.api.connectors.rest_api import ApiError
from ingestion_platform_tests.music import CATALOG, DAY, NEXT_DAY, SECRET, WINDOW
from ingestion_platform_tests.music import music_attributes as _attributes
from ingestion_platform_tests.sources import (
    build_source,
    failure_message,
    materialize,
    with_warehouse,
)

ERROR = "ingestion_platform.sources.api.errors.ApiSourceError"


def _albums(day: str, days: int = 1) -> list[str]:
    end = f"2026-01-{int(day[-2:]) + days:02d}"
    return sorted(album["id"] for album in CATALOG.releases_between(day, end))


def _tracks(album_ids: list[str]) -> list[str]:
    return sorted(track["id"] for album in album_ids for track in CATALOG.tracks_for(album))


def _landed(warehouse: Warehouse, table: str, batch: str | None = None) -> list[str]:
    where = "where _batch_key = ?" if batch else ""
    rows = warehouse.query(
        f"select id from music.{table} {where} order by id",  # noqa: S608
        (batch,) if batch else (),
    )
    return [row[0] for row in rows]


def _run(tmp_path: Path, resources: dict, instance: dg.DagsterInstance, **kwargs: Any) -> Any:
    attributes = kwargs.pop("attributes", None) or _attributes()
    defs = build_source(RestApiSource, tmp_path / "music", attributes)
    return materialize(defs, resources=resources, instance=instance, **kwargs)


def _failed_day(
    tmp_path: Path, resources: dict, instance: dg.DagsterInstance, attributes: dict
) -> dg.ExecuteInProcessResult:
    """A run of DAY with `attributes` that is expected to fail (its result, not raised)."""
    options = {"partition_key": DAY, "attributes": attributes, "raise_on_error": False}
    return _run(tmp_path, resources, instance, **options)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    events = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[-1] == asset
    ]
    return {key: value.value for key, value in events[-1].materialization.metadata.items()}


def test_a_day_lands_exactly_its_releases_and_their_tracks_and_reruns_replace(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    for day in (DAY, NEXT_DAY, DAY):
        result = _run(tmp_path, resources, instance, partition_key=day)

    for day in (DAY, NEXT_DAY):
        assert _landed(warehouse, "new_releases", day) == _albums(day)
        assert _landed(warehouse, "album_tracks", day) == _tracks(_albums(day))
    assert warehouse.count("music", "new_releases") == len(_albums(DAY, days=2))
    metadata = _metadata(result, "new_releases")
    assert metadata["dagster/row_count"] == len(_albums(DAY))
    # Every page, plus the token request: it is spent from the same budget.
    assert metadata["requests"] == metadata["pages"] + 1 > len(_albums(DAY))
    assert metadata["retries"] == 0 and metadata["throttled_429"] == 0
    # Nested lists land in child tables, tied to their album by dlt's parent id.
    artists = warehouse.query(
        "select count(*) from music.new_releases__artists a join music.new_releases r "
        "on a._dlt_parent_id = r._dlt_id where r._batch_key = ?",
        (DAY,),
    )[0][0]
    assert artists == sum(
        len(album["artists"]) for album in CATALOG.releases_between(DAY, NEXT_DAY)
    )
    # Schema drift is checked in the run: the tables existed, and the API added nothing.
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    assert sorted(checks) == [("album_tracks", "schema_drift"), ("new_releases", "schema_drift")]
    assert all(check.passed for check in checks.values())


def _paged(name: str, path: str, paginator: dict[str, Any], selector: str, **kw: Any) -> dict:
    return {
        "name": name,
        "endpoint": {"path": path, "paginator": paginator, "data_selector": selector, **kw},
        "primary_key": "id",
        "window": WINDOW,
    }


PAGINATORS = {
    "json_link": _paged(
        "releases",
        "v1/browse/new-releases",
        {"type": "json_link", "next_url_path": "albums.next"},
        "albums.items",
    ),
    "offset": _paged(
        "releases",
        "v1/browse/new-releases",
        {"type": "offset", "limit": 7, "total_path": "albums.total"},
        "albums.items",
    ),
    "page_number": _paged(
        "releases",
        "v1/paged/albums",
        {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": "total_pages"},
        "items",
        params={"page_size": 7},
    ),
    "cursor": _paged(
        "releases",
        "v1/cursor/albums",
        {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        "items",
    ),
    "header_link": _paged(
        "releases", "v1/linked/albums", {"type": "header_link"}, "$", params={"limit": 7}
    ),
}


@pytest.mark.parametrize("kind", sorted(PAGINATORS))
def test_every_paginator_walks_to_exactly_all_records(
    kind: str, server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    attributes = _attributes(
        resources=[PAGINATORS[kind]], limits={"page_size": 7, "page_size_param": "limit"}
    )
    result = _run(tmp_path, resources, instance, partition_key=DAY, attributes=attributes)

    expected = _albums(DAY)
    assert len(expected) > 14, "the window should span several pages"
    assert _landed(warehouse, "releases", DAY) == expected
    assert _metadata(result, "releases")["pages"] >= len(expected) // 7


@pytest.mark.parametrize(
    ("kind", "path", "repeated"),
    [("json_link", "/v1/browse/new-releases", "last"), ("cursor", "/v1/cursor/albums", "second")],
)
def test_pagination_that_goes_round_forever_fails_the_run_and_lands_nothing(
    kind: str,
    path: str,
    repeated: str,
    server: MusicApiServer,
    tmp_path: Path,
    warehouse: Warehouse,
    resources,
    instance,
) -> None:
    attributes = _attributes(
        resources=[PAGINATORS[kind]], limits={"page_size": 7, "page_size_param": "limit"}
    )
    _run(tmp_path, resources, instance, partition_key=NEXT_DAY, attributes=attributes)
    before = warehouse.query("select * from music.releases order by id")
    # The last page now links back to itself (json_link) or to the second page (cursor).
    server.configure(loop_at_end=1)
    server.reset_stats()

    result = _failed_day(tmp_path, resources, instance, attributes)

    pages = -(-len(_albums(DAY)) // 7)
    assert pages > 2, "the day's releases should fill several pages of 7"
    again = pages if repeated == "last" else 2
    assert failure_message(result) == (
        f"{ERROR}: source 'music' ({tmp_path / 'music' / 'defs.yaml'}): {server.url}{path}: "
        f"page {pages + 1} of this walk is page {again} again "
        "(the same request answered with the same content), so its pagination would go "
        "round forever; nothing was landed. Fix: check the resource's paginator: the next "
        "link or cursor it follows must change from page to page and be empty on the last "
        "page. If it does, the API repeats a page, and only its owner can fix that."
    )
    assert server.stats()["by_path"][path] == pages + 1
    assert warehouse.query("select * from music.releases order by id") == before


def test_a_data_selector_that_misses_the_records_fails_naming_where_they_are(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    releases = dict(PAGINATORS["json_link"])
    # A typo: dlt alone would land an empty page for every page and the run would succeed.
    releases["endpoint"] = {**releases["endpoint"], "data_selector": "albums.itms"}
    attributes = _attributes(resources=[releases], limits={"page_size": 7})

    result = _failed_day(tmp_path, resources, instance, attributes)

    assert failure_message(result) == (
        f"{ERROR}: source 'music' ({tmp_path / 'music' / 'defs.yaml'}): "
        f"{server.url}/v1/browse/new-releases: resource 'releases': data_selector "
        "'albums.itms' matches nothing in the page, which holds 7 records at 'albums.items'; "
        "nothing was landed. Fix: set the resource's endpoint.data_selector to "
        "'albums.items' (the path to its records)."
    )
    assert not warehouse.table_exists("music", "releases")


def test_rate_budget_keeps_every_request_under_the_servers_limit(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    server.configure(rate_limit_per_second=8)
    attributes = _attributes(limits={"page_size": 50, "requests_per_second": 8})
    _run(tmp_path, resources, instance, partition_key=DAY, attributes=attributes)

    stats = server.stats()
    assert stats["over_limit"] == 0
    assert stats["served_429"] == 0
    assert stats["max_arrivals_in_any_1s"] <= 8
    assert stats["by_path"]["/v1/albums/{id}/tracks"] >= len(_albums(DAY))
    assert _landed(warehouse, "album_tracks", DAY) == _tracks(_albums(DAY))


def test_bursts_of_429_and_5xx_are_retried_and_no_record_is_lost(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    server.configure(force_429_next=2, fail_next_5xx=3, retry_after_seconds=1)
    result = _run(tmp_path, resources, instance, partition_key=DAY)

    assert _landed(warehouse, "new_releases", DAY) == _albums(DAY)
    assert _landed(warehouse, "album_tracks", DAY) == _tracks(_albums(DAY))
    metadata = _metadata(result, "album_tracks")
    assert metadata["throttled_429"] == 2
    assert metadata["server_errors_5xx"] == 3
    assert metadata["retries"] == 5


def test_an_api_that_keeps_failing_is_given_up_on_with_a_clear_error(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    server.configure(fail_every_nth=1)
    attributes = _attributes(limits={"page_size": 50, "give_up_after": "3s"})
    result = _failed_day(tmp_path, resources, instance, attributes)
    message = failure_message(result)
    defs_file = tmp_path / "music" / "defs.yaml"
    assert re.fullmatch(
        re.escape(f"{ERROR}: source 'music' ({defs_file}): gave up on {server.url}/v1/browse/")
        + r"new-releases after \d+ attempts in [23]s \(last: HTTP 500\)\. "
        + re.escape(
            "Fix: check that the API answers at base_url (and auth.token_url); retries stop "
            "after limits.give_up_after."
        ),
        message,
    ), message
    assert not warehouse.table_exists("music", "new_releases")


def test_tokens_expiring_mid_run_are_renewed_without_losing_a_page(
    tmp_path: Path, warehouse: Warehouse, resources, instance, monkeypatch
) -> None:
    with MusicApiServer(catalog=CATALOG, client_secret=SECRET, token_ttl=1).start() as server:
        monkeypatch.setenv("MUSIC_API_URL", server.url)
        monkeypatch.setenv("MUSIC_API_CLIENT_ID", "demo-client")
        monkeypatch.setenv("MUSIC_API_CLIENT_SECRET", SECRET)
        attributes = _attributes(limits={"page_size": 50, "requests_per_second": 10})
        result = _run(tmp_path, resources, instance, partition_key=DAY, attributes=attributes)
        stats = server.stats()

    assert stats["tokens_issued"] >= 2
    # Tokens are renewed before they expire; one that still expired on the way is renewed
    # and its request sent again, so every 401 the server sent was recovered.
    assert (
        stats["status_counts"].get("401", 0) == _metadata(result, "album_tracks")["token_refreshes"]
    )
    assert _landed(warehouse, "album_tracks", DAY) == _tracks(_albums(DAY))


def test_wrong_credentials_fail_naming_the_source_and_never_the_secret(
    server: MusicApiServer,
    tmp_path: Path,
    resources,
    instance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MUSIC_API_CLIENT_SECRET", "wrong-" + SECRET)
    with caplog.at_level(logging.DEBUG):
        result = _run(tmp_path, resources, instance, partition_key=DAY, raise_on_error=False)

    assert failure_message(result) == (
        f"{ERROR}: source 'music' ({tmp_path / 'music' / 'defs.yaml'}): the token "
        f"endpoint {server.url}/api/token rejected the client credentials (HTTP 401). "
        "Fix: check auth.client_id, auth.client_secret and auth.token_url."
    )
    logged = caplog.text + "".join(str(event) for event in result.all_events)
    assert SECRET not in logged


def test_a_malformed_page_fails_the_run_and_keeps_the_previous_contents(
    server: MusicApiServer, tmp_path: Path, warehouse: Warehouse, resources, instance
) -> None:
    attributes = _attributes(limits={"page_size": 5})
    _run(tmp_path, resources, instance, partition_key=DAY, attributes=attributes)
    before = warehouse.query("select * from music.new_releases order by id")

    server.configure(malformed_offset=10)
    broken = _failed_day(tmp_path, resources, instance, attributes)
    defs_file = tmp_path / "music" / "defs.yaml"
    assert failure_message(broken).startswith(
        f"{ERROR}: source 'music' ({defs_file}): "
        f"{server.url}/v1/browse/new-releases answered with malformed JSON ("
    )
    assert failure_message(broken).endswith(
        "); nothing was landed. Fix: run it again; if it persists, the API is sending broken pages."
    )
    server.configure(malformed_offset=None, wrong_content_type_offset=5)
    html = _failed_day(tmp_path, resources, instance, attributes)
    assert failure_message(html) == (
        f"{ERROR}: source 'music' ({defs_file}): "
        f"{server.url}/v1/browse/new-releases answered HTTP 200 with content type "
        "text/html, expected JSON; nothing was landed. Fix: check base_url and the "
        "resource's endpoint.path."
    )
    assert warehouse.query("select * from music.new_releases order by id") == before


def test_page_size_above_the_apis_maximum_is_a_declaration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        build_source(
            RestApiSource,
            tmp_path / "music",
            _attributes(limits={"page_size": 100, "max_page_size": 50}),
        )
    assert str(raised.value) == (
        f"{tmp_path / 'music' / 'defs.yaml'}: limits.page_size: 100 is more than the API "
        "allows (50). Fix: set page_size to at most 50."
    )


@pytest.mark.parametrize(
    ("limit", "value"), [("page_size", 0), ("max_page_size", -50), ("timeout_seconds", 0)]
)
def test_a_page_size_or_timeout_that_is_not_positive_is_a_declaration_error(
    limit: str, value: int, tmp_path: Path
) -> None:
    # `page_size: 0` asked the API for empty pages; `timeout_seconds: 0` failed every request.
    with pytest.raises(ValueError) as raised:
        build_source(RestApiSource, tmp_path / "music", _attributes(limits={limit: value}))
    assert str(raised.value) == (
        f"{tmp_path / 'music' / 'defs.yaml'}: limits.{limit}: must be positive, got {value}. "
        "Fix: e.g. 5."
    )


def test_daily_partitions_come_with_a_schedule(tmp_path: Path) -> None:
    defs = build_source(RestApiSource, tmp_path / "music", _attributes())
    location = with_warehouse(defs)
    schedule = location.resolve_schedule_def("music__schedule")
    assert schedule.cron_schedule == "0 0 * * *"
    (assets,) = defs.assets or []
    assert {key.to_user_string() for key in assets.keys} == {
        "music/new_releases",
        "music/album_tracks",
    }
    # Midnight closes the day before: its run lands releases and their tracks together.
    with dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 1, 10, tzinfo=UTC),
        repository_def=location.get_repository_def(),
    ) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-01-09"
    assert set(request.asset_selection or []) == set(assets.keys)


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "api_key", "api_key": {"env": "MUSIC_KEY"}, "name": "X-API-Key"},
        {
            "type": "api_key",
            "api_key": {"env": "MUSIC_KEY"},
            "name": "api_key",
            "location": "query",
        },
        {"type": "http_basic", "username": {"env": "MUSIC_USER"}, "password": {"env": "MUSIC_KEY"}},
        {"type": "bearer", "token": {"env": "MUSIC_TOKEN"}},
    ],
    ids=["api_key_header", "api_key_query", "http_basic", "bearer"],
)
def test_every_auth_style_fetches_the_whole_window(
    auth: dict[str, Any], tmp_path: Path, warehouse: Warehouse, resources, instance, monkeypatch
) -> None:
    key = "k-" + SECRET
    with MusicApiServer(
        catalog=CATALOG, client_secret=SECRET, api_key=key, basic_auth=("loader", key)
    ).start() as server:
        token = requests.post(
            f"{server.url}/api/token",
            data={"grant_type": "client_credentials"},
            auth=("demo-client", SECRET),
            timeout=10,
        ).json()["access_token"]
        for name, value in {
            "MUSIC_API_URL": server.url,
            "MUSIC_KEY": key,
            "MUSIC_USER": "loader",
            "MUSIC_TOKEN": token,
        }.items():
            monkeypatch.setenv(name, value)
        _run(tmp_path, resources, instance, partition_key=DAY, attributes=_attributes(auth=auth))
        assert server.stats()["status_counts"].get("401", 0) == 0

    assert _landed(warehouse, "album_tracks", DAY) == _tracks(_albums(DAY))


def _page(url: str, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request("GET", url).prepare()
    response.url = url
    return response


def test_a_page_that_repeats_its_request_with_new_content_is_not_a_loop() -> None:
    # A scroll API sends the same cursor on every page; only a page answered the same way
    # twice is a loop. Each walk (the next parent's pages) starts afresh.
    guard = PageGuard(
        JSONResponseCursorPaginator(cursor_path="scroll", cursor_param="scroll"), "hits", "hits"
    )
    url = "http://127.0.0.1/v1/scroll?scroll=s1"
    for _walk in range(2):
        request = requests.Request("GET", "http://127.0.0.1/v1/scroll")
        guard.init_request(request)
        for hits in (b"[1]", b"[2]"):
            guard.update_state(_page(url, b'{"scroll": "s1", "hits": ' + hits + b"}"))
            guard.update_request(request)
            assert guard.has_next_page and request.params == {"scroll": "s1"}

    with pytest.raises(
        ApiError, match=r"^http://127.0.0.1/v1/scroll: page 3 of this walk is page 2 again"
    ):
        guard.update_state(_page(url, b'{"scroll": "s1", "hits": [2]}'))


def test_a_page_the_selector_misses_is_empty_unless_it_holds_records_elsewhere() -> None:
    guard = PageGuard(None, "releases", "albums.items")
    url = "http://127.0.0.1/v1/browse/new-releases"
    guard.init_request(requests.Request("GET", url))
    # An API that leaves the list out of an empty page.
    guard.update_state(_page(url, b'{"albums": {"total": 0}, "next": null}'), [])
    assert not guard.has_next_page

    guard.init_request(requests.Request("GET", url))
    with pytest.raises(ApiError, match=r"holds 2 records at 'data'; nothing was landed$"):
        guard.update_state(_page(url, b'{"data": [{"id": 1}, {"id": 2}]}'), [])
