"""API records whose keys would land as one column: refused naming the fix, landed once renamed.

dlt lands `userId` and `user_id` as one column `user_id` and keeps only the last value; the
music API has no such record, so a second, minimal HTTP server serves one here.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from ingestion_platform.core.declaration import DeclarationError
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform_tests.servers import reply_json, serve_http
from ingestion_platform_tests.sources import build_source, failure_message, materialize

ERROR = "ingestion_platform.sources.api.errors.ApiSourceError"
DAY = "2026-01-02"
USERS = [
    {"id": 1, "userId": 10, "user_id": 20, "profile": {"firstName": "Ada"}},
    {"id": 2, "userId": 11, "user_id": 21, "profile": {"firstName": "Bo"}},
]


class _Users(BaseHTTPRequestHandler):
    records: list[dict[str, Any]] = USERS  # what the next page holds

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        reply_json(self, self.records)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def users_api() -> Iterator[str]:
    with serve_http(_Users) as url:
        yield url


def _defs(tmp_path: Path, url: str, **resource: Any) -> Any:
    users = {
        "name": "users",
        "endpoint": {"path": "users", "paginator": "single_page"},
        "primary_key": "id",
        **resource,
    }
    attributes = {
        "base_url": url,
        "resources": [users],
        "batch": {"every": "day", "start": "2026-01-01"},
    }
    return build_source(RestApiSource, tmp_path / "shop", attributes)


def _failure(defs: Any, resources: dict, instance: Any) -> str:
    """The error of the day's run, which must fail."""
    failed = materialize(
        defs, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )
    return failure_message(failed)


def test_keys_that_would_land_as_one_column_fail_naming_them_and_the_rename(
    users_api: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    failed = _failure(_defs(tmp_path, users_api), resources, instance)

    assert failed == (
        f"{ERROR}: source 'shop' ({tmp_path / 'shop' / 'defs.yaml'}): resource 'users': a "
        "record's keys 'userId', 'user_id' would all land as column 'user_id', so one of "
        "their values would be lost; nothing was landed. Fix: give one of them a name of its "
        "own with `rename: {userId: <new name>}` under the resource 'users' (top-level keys "
        "only)."
    )
    assert not warehouse.table_exists("shop", "users")

    renamed = _defs(tmp_path, users_api, rename={"userId": "user_id_camel"})
    for _ in range(2):
        landed = materialize(renamed, partition_key=DAY, resources=resources, instance=instance)
        assert landed.success

    assert warehouse.query(
        "select id, user_id_camel, user_id, profile__first_name from shop.users order by id"
    ) == [(1, 10, 20, "Ada"), (2, 11, 21, "Bo")]


def test_a_rename_onto_a_key_the_record_has_fails_instead_of_dropping_it(
    users_api: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance
) -> None:
    failed = _failure(_defs(tmp_path, users_api, rename={"userId": "id"}), resources, instance)

    assert failed == (
        f"{ERROR}: source 'shop' ({tmp_path / 'shop' / 'defs.yaml'}): resource 'users': "
        "`rename` gives a record's key the name 'id', which the record already has; nothing "
        "was landed. Fix: rename it to a name the API does not use, under resources "
        "(users).rename."
    )
    assert not warehouse.table_exists("shop", "users")


def test_renaming_the_primary_key_is_a_declaration_error(users_api: str, tmp_path: Path) -> None:
    with pytest.raises(DeclarationError) as raised:
        _defs(tmp_path, users_api, rename={"id": "user_number"})

    assert str(raised.value) == (
        f"{tmp_path / 'shop' / 'defs.yaml'}: resources[0].rename: 'id' is a key dlt matches "
        "records on (primary key, cursor or a field a child resource includes), so it keeps "
        "the API's name. Fix: remove 'id' from rename."
    )


def test_a_key_named_like_the_platforms_own_column_fails_naming_the_rename(
    users_api: str, tmp_path: Path, warehouse: Warehouse, resources: dict, instance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(_Users, "records", [{"id": 1, "_loaded_at": "2026-01-01"}])

    failed = _failure(_defs(tmp_path, users_api), resources, instance)

    # Before: the landing's own `_loaded_at` overwrote the record's, silently.
    assert failed == (
        f"{ERROR}: source 'shop' ({tmp_path / 'shop' / 'defs.yaml'}): resource 'users': a "
        "record's key '_loaded_at' would land as the platform's own column '_loaded_at'; "
        "nothing was landed. Fix: give it a name of its own with `rename: {_loaded_at: <new "
        "name>}` under the resource 'users'."
    )
