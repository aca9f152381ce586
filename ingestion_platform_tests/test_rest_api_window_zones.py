"""API windows counted in a time zone (`batch: {timezone: Europe/Paris}`) against an API
whose filter takes UTC instants (`format: "%Y-%m-%dT%H:%M:%SZ"`): each day's request asks
for that Paris day's instants, so each record lands in its Paris day, across a DST change
(Paris went from +01:00 to +02:00 at 2026-03-29 01:00 UTC).

Before, a bound was written as Paris wall-clock time with the `Z` after it: each request
asked for a window one or two hours late. The schedule asks for a day at Paris midnight,
so the records of the last two UTC hours before it were asked for before they existed,
and no later window asked for them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.api.component import RestApiSource
from ingestion_platform_tests.servers import reply_json, serve_http
from ingestion_platform_tests.sources import build_source, materialize

DAYS = ["2026-03-28", "2026-03-29", "2026-03-30"]
# id -> (the instant, the Paris day it belongs to)
EVENTS = {
    1: (datetime(2026, 3, 27, 23, 0, tzinfo=UTC), "2026-03-28"),  # Paris 00:00 (+01:00)
    2: (datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC), "2026-03-28"),  # 23:59:59
    3: (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "2026-03-29"),  # Paris 00:00
    4: (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "2026-03-29"),  # 03:30, after the change
    5: (datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC), "2026-03-29"),  # 23:59:59 (+02:00)
    6: (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "2026-03-30"),  # Paris 00:00 (+02:00)
    7: (datetime(2026, 3, 29, 23, 30, tzinfo=UTC), "2026-03-30"),  # 01:30
    8: (datetime(2026, 3, 30, 21, 59, tzinfo=UTC), "2026-03-30"),  # 23:59
    9: (datetime(2026, 3, 30, 22, 0, tzinfo=UTC), "2026-03-31"),  # the next day: never asked
}
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class _EventsApi(BaseHTTPRequestHandler):
    """`GET /events?since=…&until=…`: the events at `since <= at < until`, UTC instants."""

    asked: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self.asked.append((query["since"], query["until"]))
        since, until = (datetime.strptime(query[p], UTC_FORMAT).replace(tzinfo=UTC) for p in
                        ("since", "until"))  # fmt: skip
        events = [
            {"id": i, "at": at.strftime(UTC_FORMAT)}
            for i, (at, _day) in EVENTS.items()
            if since <= at < until
        ]
        reply_json(self, {"events": events})

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def events_api() -> Iterator[str]:
    _EventsApi.asked = []
    with serve_http(_EventsApi) as url:
        yield url


def test_each_record_lands_in_its_paris_day_and_each_request_asks_for_it_in_utc(
    events_api: str,
    tmp_path: Path,
    warehouse: Warehouse,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    attributes = {
        "base_url": events_api,
        "resources": [
            {
                "name": "events",
                "endpoint": {
                    "path": "events",
                    "data_selector": "events",
                    "paginator": "single_page",
                },
                "primary_key": "id",
                "window": {
                    "start_param": "since",
                    "end_param": "until",
                    "cursor_path": "at",
                    "format": UTC_FORMAT,
                },
            }
        ],
        "batch": {"every": "day", "start": "2026-03-27", "timezone": "Europe/Paris"},
    }
    defs = build_source(RestApiSource, tmp_path / "paris", attributes)
    for day in DAYS:
        materialize(defs, partition_key=day, resources=resources, instance=instance)

    assert _EventsApi.asked == [
        ("2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z"),
        ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),  # 23 hours
        ("2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"),
    ]
    placed = dict(warehouse.query("select id, _batch_key from paris.events order by id"))
    assert placed == {i: day for i, (_at, day) in EVENTS.items() if day in DAYS}
