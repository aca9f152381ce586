"""The local music API behaves like the real thing: real HTTP on 127.0.0.1, no mocks.

Other tests and the benchmark trust this server's pagination, auth, rate limit and faults, so each
behaviour is pinned down exactly here (ids compared one by one, 429s counted, not just "some").
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import requests

from ingestion_platform.demo.music_api import MusicApiServer, max_in_window
from ingestion_platform.demo.music_catalog import Catalog

CLIENT = ("demo-client", "demo-secret")
WINDOW = {"released_after": "2026-01-10", "released_before": "2026-02-01"}


@pytest.fixture(scope="module")
def server() -> Iterator[MusicApiServer]:
    with MusicApiServer(catalog=Catalog(), api_key="k-123", basic_auth=("ann", "pw")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def clean_server(request: pytest.FixtureRequest) -> None:
    # One server per module keeps the file fast; every test starts with no faults and no history.
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        srv.config.reset()
        srv.reset_stats()


@pytest.fixture
def session(server: MusicApiServer) -> Iterator[requests.Session]:
    with requests.Session() as http:
        token = http.post(
            f"{server.url}/api/token", data={"grant_type": "client_credentials"}, auth=CLIENT
        ).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def ids(records: list[dict]) -> list[str]:
    return [record["id"] for record in records]


def expected_window(server: MusicApiServer) -> list[dict]:
    return server.catalog.releases_between(WINDOW["released_after"], WINDOW["released_before"])


def new_releases(server: MusicApiServer, session: requests.Session, **params) -> requests.Response:
    return session.get(f"{server.url}/v1/browse/new-releases", params=params)


# --- catalog -------------------------------------------------------------------------------------


def test_catalog_is_deterministic_and_spread_over_days() -> None:
    catalog = Catalog(seed=7)
    assert catalog.albums == Catalog(seed=7).albums
    assert ids(catalog.albums) != ids(Catalog(seed=8).albums)
    assert len(catalog.albums) == 600
    assert catalog.albums == sorted(catalog.albums, key=lambda a: (a["release_date"], a["id"]))
    per_day = collections.Counter(album["release_date"] for album in catalog.albums)
    assert min(per_day) >= "2026-01-01" and max(per_day) < "2026-03-02"
    assert len(per_day) > 50 and len(set(per_day.values())) > 5  # several per day, uneven
    album = catalog.albums[0]
    tracks = catalog.tracks_for(album["id"])
    assert tracks == catalog.tracks_for(album["id"])
    assert [t["track_number"] for t in tracks] == list(range(1, album["total_tracks"] + 1))
    assert all(3 <= a["total_tracks"] <= 14 for a in catalog.albums)
    assert isinstance(album["artists"][0], dict) and isinstance(album["genres"], list)


def test_releases_between_is_inclusive_after_exclusive_before() -> None:
    catalog = Catalog()
    window = catalog.releases_between(date(2026, 1, 10), "2026-02-01")
    expected = [a for a in catalog.albums if "2026-01-10" <= a["release_date"] < "2026-02-01"]
    assert window == expected and window


# --- auth ----------------------------------------------------------------------------------------


def test_token_via_basic_auth_and_form_fields(server: MusicApiServer) -> None:
    grant = {"grant_type": "client_credentials"}
    by_basic = requests.post(f"{server.url}/api/token", data=grant, auth=CLIENT)
    form = {**grant, "client_id": CLIENT[0], "client_secret": CLIENT[1]}
    by_form = requests.post(f"{server.url}/api/token", data=form)
    for response in (by_basic, by_form):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        assert requests.get(f"{server.url}/v1/paged/albums", headers=headers).status_code == 200
    assert server.stats()["tokens_issued"] == 2


def test_wrong_credentials_and_grant_type_are_rejected(server: MusicApiServer) -> None:
    wrong = requests.post(
        f"{server.url}/api/token",
        data={"grant_type": "client_credentials"},
        auth=("demo-client", "nope"),
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    bad_grant = requests.post(
        f"{server.url}/api/token", data={"grant_type": "password"}, auth=CLIENT
    )
    assert bad_grant.status_code == 400
    assert server.stats()["tokens_issued"] == 0


def test_token_expires_after_ttl() -> None:
    with MusicApiServer(catalog=Catalog(albums=10), token_ttl=0.3) as srv:
        token_response = requests.post(
            f"{srv.url}/api/token", data={"grant_type": "client_credentials"}, auth=CLIENT
        )
        assert token_response.json()["expires_in"] == 0.3
        headers = {"Authorization": f"Bearer {token_response.json()['access_token']}"}
        url = f"{srv.url}/v1/browse/new-releases"
        assert requests.get(url, headers=headers).status_code == 200
        time.sleep(0.35)
        expired = requests.get(url, headers=headers)
    assert expired.status_code == 401
    assert expired.json() == {"error": {"status": 401, "message": "The access token expired"}}


def test_unknown_or_missing_token_is_401(server: MusicApiServer) -> None:
    url = f"{server.url}/v1/browse/new-releases"
    unknown = requests.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "Invalid access token"
    assert requests.get(url).status_code == 401


def test_api_key_header_query_and_basic_auth(server: MusicApiServer) -> None:
    url = f"{server.url}/v1/paged/albums"
    assert requests.get(url, headers={"X-API-Key": "k-123"}).status_code == 200
    assert requests.get(url, params={"api_key": "k-123"}).status_code == 200
    assert requests.get(url, auth=("ann", "pw")).status_code == 200
    assert requests.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    assert requests.get(url, auth=("ann", "wrong")).status_code == 401


def test_api_key_is_not_echoed_in_next_links(server: MusicApiServer) -> None:
    page = requests.get(
        f"{server.url}/v1/browse/new-releases", params={"api_key": "k-123", "limit": 5}
    ).json()
    assert "k-123" not in page["albums"]["next"]


def test_require_auth_false_needs_no_credentials() -> None:
    with MusicApiServer(catalog=Catalog(albums=10), require_auth=False) as srv:
        assert requests.get(f"{srv.url}/v1/browse/new-releases").status_code == 200


# --- pagination ----------------------------------------------------------------------------------


def test_new_releases_next_links_walk_exactly_the_window(
    server: MusicApiServer, session: requests.Session
) -> None:
    url, walked, pages = f"{server.url}/v1/browse/new-releases", [], 0
    params: dict | None = {**WINDOW, "limit": 50}
    while url:
        albums = session.get(url, params=params).json()["albums"]
        params, url, pages = None, albums["next"], pages + 1
        walked += albums["items"]
        if url:
            assert "released_after=2026-01-10" in url and "released_before=2026-02-01" in url
    expected = expected_window(server)
    assert ids(walked) == ids(expected) and walked == expected
    assert albums["total"] == len(expected) and pages == -(-len(expected) // 50)


def test_new_releases_page_shape(server: MusicApiServer, session: requests.Session) -> None:
    albums = new_releases(server, session, offset=20, limit=10).json()["albums"]
    assert ids(albums["items"]) == ids(server.catalog.albums[20:30])
    assert (albums["offset"], albums["limit"], albums["total"]) == (20, 10, 600)
    assert albums["next"].startswith(server.url) and "offset=30" in albums["next"]
    assert "offset=10" in albums["previous"]
    first = new_releases(server, session).json()["albums"]
    assert first["previous"] is None and first["limit"] == 20


@pytest.mark.parametrize(
    "params",
    [{"limit": 51}, {"limit": 0}, {"offset": -1}, {"limit": "x"}, {"released_after": "jan"}],
)
def test_invalid_parameters_are_400(
    server: MusicApiServer, session: requests.Session, params: dict
) -> None:
    response = new_releases(server, session, **params)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == 400 and response.json()["error"]["message"]


def test_album_tracks_paginate_and_unknown_album_is_404(
    server: MusicApiServer, session: requests.Session
) -> None:
    album = max(server.catalog.albums, key=lambda a: a["total_tracks"])
    url, walked = f"{server.url}/v1/albums/{album['id']}/tracks?limit=5", []
    while url:
        page = session.get(url).json()
        walked += page["items"]
        url = page["next"]
    assert walked == server.catalog.tracks_for(album["id"])
    assert session.get(f"{server.url}/v1/albums/alb-999999/tracks").status_code == 404
    assert session.get(f"{server.url}/v1/albums/x/tracks", params={"limit": 51}).status_code == 404
    assert server.stats()["by_path"]["/v1/albums/{id}/tracks"] == 5


def test_page_number_endpoint_walks_everything(
    server: MusicApiServer, session: requests.Session
) -> None:
    walked, page = [], 1
    while True:
        body = session.get(
            f"{server.url}/v1/paged/albums", params={**WINDOW, "page": page, "page_size": 50}
        ).json()
        walked += body["items"]
        if page >= body["total_pages"]:
            break
        page += 1
    assert ids(walked) == ids(expected_window(server))


def test_cursor_endpoint_walks_everything(
    server: MusicApiServer, session: requests.Session
) -> None:
    walked, params = [], {**WINDOW, "limit": 7}
    while True:
        body = session.get(f"{server.url}/v1/cursor/albums", params=params).json()
        walked += body["items"]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert ids(walked) == ids(expected_window(server))
    bad = session.get(f"{server.url}/v1/cursor/albums", params={"cursor": "!!"})
    assert bad.status_code == 400


def test_link_header_endpoint_walks_everything(
    server: MusicApiServer, session: requests.Session
) -> None:
    walked = []
    response = session.get(f"{server.url}/v1/linked/albums", params={**WINDOW, "limit": 50})
    while True:
        assert isinstance(response.json(), list)
        walked += response.json()
        if "next" not in response.links:
            break
        response = session.get(response.links["next"]["url"])
    assert ids(walked) == ids(expected_window(server))


# --- rate limit ----------------------------------------------------------------------------------


def test_rate_limit_admits_exactly_the_burst_under_concurrency(
    server: MusicApiServer, session: requests.Session
) -> None:
    server.configure(rate_limit_per_second=10)  # burst 10, window 1 s
    url, statuses = f"{server.url}/v1/paged/albums", []
    barrier = threading.Barrier(6)

    def hammer() -> None:
        with requests.Session() as own:
            own.headers.update(session.headers)
            barrier.wait()
            statuses.extend(own.get(url).status_code for _ in range(5))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collections.Counter(statuses) == {200: 10, 429: 20}
    stats = server.stats()
    assert stats["over_limit"] == 20 and stats["served_429"] == 20


def test_429_carries_retry_after_and_json_error(
    server: MusicApiServer, session: requests.Session
) -> None:
    server.configure(rate_limit_per_second=2)
    responses = [session.get(f"{server.url}/v1/paged/albums") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].headers["Retry-After"] == "1"
    assert responses[2].json()["error"]["status"] == 429
    server.configure(retry_after_seconds=7)
    assert session.get(f"{server.url}/v1/paged/albums").headers["Retry-After"] == "7"


def test_client_pacing_under_the_limit_sees_no_429(
    server: MusicApiServer, session: requests.Session
) -> None:
    # burst 2 at 10/s: at most 2 requests in any 0.2 s; pacing 0.12 s apart stays under it.
    server.configure(rate_limit_per_second=10, rate_limit_burst=2)
    for _ in range(10):
        assert session.get(f"{server.url}/v1/paged/albums").status_code == 200
        time.sleep(0.12)
    stats = server.stats()
    assert stats["over_limit"] == 0 and len(stats["arrivals"]) == 10
    assert max_in_window(stats["arrivals"], 0.2) <= 2


def test_token_endpoint_is_outside_the_rate_limit(server: MusicApiServer) -> None:
    server.configure(rate_limit_per_second=1)
    grant = {"grant_type": "client_credentials"}
    for _ in range(3):
        assert requests.post(f"{server.url}/api/token", data=grant, auth=CLIENT).ok
    assert server.stats()["over_limit"] == 0


# --- fault injection -----------------------------------------------------------------------------


def test_fail_next_5xx_then_recovers(server: MusicApiServer, session: requests.Session) -> None:
    server.configure(fail_next_5xx=2)
    statuses = [new_releases(server, session).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert server.stats()["served_5xx"] == 2


def test_fail_every_nth(server: MusicApiServer, session: requests.Session) -> None:
    server.configure(fail_every_nth=3)
    statuses = [new_releases(server, session).status_code for _ in range(6)]
    assert statuses == [200, 200, 500, 200, 200, 500]


def test_force_429_is_independent_of_rate_limit(
    server: MusicApiServer, session: requests.Session
) -> None:
    server.configure(force_429_next=1)
    forced = new_releases(server, session)
    assert forced.status_code == 429 and int(forced.headers["Retry-After"]) >= 1
    assert new_releases(server, session).status_code == 200
    stats = server.stats()
    assert stats["served_429"] == 1 and stats["over_limit"] == 0


def test_malformed_and_wrong_content_type_pages(
    server: MusicApiServer, session: requests.Session
) -> None:
    server.configure(malformed_offset=20, wrong_content_type_offset=40)
    broken = new_releases(server, session, offset=20)
    assert broken.status_code == 200
    assert broken.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        broken.json()
    html = new_releases(server, session, offset=40)
    assert html.headers["Content-Type"] == "text/html" and html.text.startswith("<html>")
    assert new_releases(server, session, offset=0).json()["albums"]["offset"] == 0


def test_slow_every_nth(server: MusicApiServer, session: requests.Session) -> None:
    server.configure(slow_seconds=0.2, slow_every_nth=2)
    elapsed = []
    for _ in range(2):
        started = time.perf_counter()
        new_releases(server, session)
        elapsed.append(time.perf_counter() - started)
    assert elapsed[0] < 0.15 <= 0.2 <= elapsed[1]


# --- admin and lifecycle -------------------------------------------------------------------------


def test_http_admin_configures_counts_and_resets(
    server: MusicApiServer, session: requests.Session
) -> None:
    admin = f"{server.url}/_admin"
    assert requests.post(f"{admin}/config", json={"fail_next_5xx": 1}).json()["fail_next_5xx"] == 1
    assert new_releases(server, session).status_code == 503
    stats = requests.get(f"{admin}/stats").json()
    assert stats["requests_total"] == 2  # token + one /v1 call; admin calls are not counted
    assert stats["by_path"] == {"/api/token": 1, "/v1/browse/new-releases": 1}
    assert requests.post(f"{admin}/config", json={"nope": 1}).status_code == 400
    assert requests.post(f"{admin}/config", json={"fail_next_5xx": -1}).status_code == 400
    requests.post(f"{admin}/reset")
    assert server.stats()["requests_total"] == 0


def test_stop_closes_kept_alive_connections() -> None:
    with (
        MusicApiServer(catalog=Catalog(albums=5), require_auth=False) as srv,
        requests.Session() as s,
    ):
        assert s.get(f"{srv.url}/v1/paged/albums").ok
        srv.stop()
        with pytest.raises(requests.ConnectionError):
            s.get(f"{srv.url}/v1/paged/albums")


def test_cli_runs_quietly_with_env_credentials() -> None:
    env = {**os.environ, "MUSIC_API_CLIENT_ID": "cli-id", "MUSIC_API_CLIENT_SECRET": "cli-secret"}
    command = [sys.executable, "-m", "ingestion_platform.demo.music_api", "--port", "0"]
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        banner = process.stdout.readline()
        url = banner.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        grant = {"grant_type": "client_credentials"}
        token = requests.post(f"{url}/api/token", data=grant, auth=("cli-id", "cli-secret"))
        assert token.status_code == 200
        assert requests.post(f"{url}/api/token", data=grant, auth=CLIENT).status_code == 401
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=5)
    assert "cli-secret" not in banner and stderr.strip() == ""
