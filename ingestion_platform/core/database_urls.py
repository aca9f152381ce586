"""Which Python driver SQLAlchemy uses for a database URL that names none."""

import sqlalchemy as sa

# SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, whose import alone takes 0.17 s
# of every run (it loads its bundled libpq and OpenSSL), against 0.01 s for psycopg2, which
# dagster-postgres needs installed anyway. The platform's own SQL (reflection, counts, the
# pyarrow backend's reads) is plain SQLAlchemy, exact on either.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg2"}


def engine_url(url: str | sa.URL) -> sa.URL:
    """`url` parsed, with psycopg2 for a PostgreSQL URL that names no driver; a driver the
    URL names (`postgresql+psycopg://`) is kept."""
    parsed = sa.make_url(url)
    return parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))


def shown_url(url: sa.URL) -> str:
    """An engine's URL for messages: password masked, and as the user wrote it when the
    driver is the one `engine_url` chose."""
    defaulted = {driver: bare for bare, driver in _DEFAULT_DRIVERS.items()}
    bare = url.set(drivername=defaulted.get(url.drivername, url.drivername))
    return bare.render_as_string(hide_password=True)
