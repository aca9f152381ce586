"""The music API source as the tests declare it, and the catalog it serves."""

from __future__ import annotations

from typing import Any

from ingestion_platform.demo.music_catalog import Catalog

CATALOG = Catalog(seed=7, albums=240, days=10)
SECRET = "s3cret-client-secret"
DAY = "2026-01-02"
NEXT_DAY = "2026-01-03"


WINDOW = {
    "start_param": "released_after",
    "end_param": "released_before",
    "cursor_path": "release_date",
}


def music_attributes(**overrides: Any) -> dict[str, Any]:
    return {
        "base_url": {"env": "MUSIC_API_URL"},
        "auth": {
            "type": "oauth2_client_credentials",
            "token_url": "/api/token",
            "client_id": {"env": "MUSIC_API_CLIENT_ID"},
            "client_secret": {"env": "MUSIC_API_CLIENT_SECRET"},
        },
        "limits": {"page_size": 50, "max_page_size": 50, "give_up_after": "20s"},
        "resources": [
            {
                "name": "new_releases",
                "endpoint": {
                    "path": "v1/browse/new-releases",
                    "data_selector": "albums.items",
                    "paginator": {"type": "json_link", "next_url_path": "albums.next"},
                },
                "primary_key": "id",
                "window": WINDOW,
            },
            {
                "name": "album_tracks",
                "endpoint": {
                    "path": "v1/albums/{resources.new_releases.id}/tracks",
                    "data_selector": "items",
                    "paginator": {"type": "json_link", "next_url_path": "next"},
                },
                "primary_key": "id",
                "include_from_parent": ["id"],
            },
        ],
        "batch": {"every": "day", "start": "2026-01-01"},
        **overrides,
    }
