"""A window bound in a time zone, written with a user's format (an API filter's `format`,
a Glue argument's `{start:…}`), keeps its instant where the format says UTC."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ingestion_platform.core.instant_formats import format_bound
from ingestion_platform.sources.glue.run import render

# The start of 29 March in Paris, the day it went from +01:00 to +02:00.
PARIS_DAY = datetime(2026, 3, 29, tzinfo=ZoneInfo("Europe/Paris"))
NEXT_DAY = datetime(2026, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))


@pytest.mark.parametrize(
    ("format_", "written"),
    [
        ("%Y-%m-%dT%H:%M:%SZ", "2026-03-28T23:00:00Z"),
        ("%Y-%m-%dT%H:%M:%S.000Z", "2026-03-28T23:00:00.000Z"),
        ("%s", "1774738800"),  # the instant's epoch seconds, whatever the machine's zone
        ("%Y-%m-%dT%H:%M:%S%z", "2026-03-29T00:00:00+0100"),
        ("%Y-%m-%d", "2026-03-29"),  # the Paris day, as the window counts it
        ("%Y-%m-%dT%H:%M:%S", "2026-03-29T00:00:00"),  # wall-clock, as declared
        ("%Y%m%d-Zone", "20260329-Zone"),  # a Z with no time is no time zone
        ("%%s and %%Z at %H:%M", "%s and %Z at 00:00"),
    ],
)
def test_a_bound_is_written_in_utc_only_where_the_format_says_utc(
    format_: str, written: str
) -> None:
    assert format_bound(PARIS_DAY, format_) == written


def test_a_glue_argument_formatted_in_utc_gets_the_windows_instants() -> None:
    template = "since={start:%Y-%m-%dT%H:%M:%SZ}&until={end:%Y-%m-%dT%H:%M:%SZ}&day={start:%F}"
    assert render(template, PARIS_DAY, NEXT_DAY, "2026-03-29") == (
        "since=2026-03-28T23:00:00Z&until=2026-03-29T22:00:00Z&day=2026-03-29"
    )
    assert render("{start}", PARIS_DAY, NEXT_DAY, "2026-03-29") == "2026-03-29T00:00:00+01:00"
