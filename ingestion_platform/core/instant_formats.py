"""A window bound written with a user's strftime format, as the instant it is."""

import re
from datetime import UTC, datetime


def format_bound(value: datetime, format_: str) -> str:
    """`value` written with `format_`, keeping its instant when the format says UTC.

    A window counted in a time zone (`batch: {timezone: …}`) has bounds in that zone. A
    format that says UTC (a literal `Z` after the time) gets the bound's instant in UTC, and
    `%s` its epoch seconds: written as the zone's wall-clock time instead, a filter asked
    for a window shifted by the zone's offset. Other formats write the zone's own date and
    time (`%z` adds its offset).
    """
    if value.tzinfo is not None:
        if _says_utc(format_):
            value = value.astimezone(UTC)
        # strftime's `%s` reads the fields as the machine's local time, whatever the tzinfo.
        epoch = str(int(value.timestamp()))
        format_ = re.sub(r"%.", lambda d: epoch if d.group() == "%s" else d.group(), format_)
    return value.strftime(format_)


def _says_utc(format_: str) -> bool:
    """Whether a format writes a `Z` (Zulu, UTC) right after its time (`%SZ`, `%S.000Z`)."""
    unescaped = format_.replace("%%", "\0")  # `%%Z` writes the text %Z, no zone
    return re.search(r"%[HMSf][^%A-Za-z\0]*Z(?![A-Za-z])", unescaped) is not None
