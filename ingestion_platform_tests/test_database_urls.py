"""The driver behind a PostgreSQL URL that names none, and how URLs appear in messages."""

import subprocess
import sys

import pytest
import sqlalchemy as sa

from ingestion_platform.core.database_urls import engine_url, shown_url
from ingestion_platform.sources.sql.connectors.sql_database import make_engine


@pytest.mark.parametrize(
    ("written", "driver"),
    [
        ("postgresql://u:pw@db:5432/shop", "postgresql+psycopg2"),
        ("postgresql+psycopg://u:pw@db:5432/shop", "postgresql+psycopg"),
        ("postgresql+psycopg2://u:pw@db:5432/shop", "postgresql+psycopg2"),
        ("mysql+pymysql://root@db:3306/shop", "mysql+pymysql"),
        ("sqlite:////data/shop.sqlite", "sqlite"),
    ],
)
def test_only_a_bare_postgresql_url_gets_a_driver_chosen(written: str, driver: str) -> None:
    url = engine_url(written)
    assert url.drivername == driver
    assert url.set(drivername="x") == sa.make_url(written).set(drivername="x")


def test_messages_show_the_url_as_written_without_its_password() -> None:
    assert shown_url(engine_url("postgresql://u:pw@db:5432/shop")) == (
        "postgresql://u:***@db:5432/shop"
    )
    assert shown_url(engine_url("postgresql+psycopg://u:pw@db/shop")) == (
        "postgresql+psycopg://u:***@db/shop"
    )


def test_a_bare_postgresql_url_never_imports_psycopg_3(postgres_url: str) -> None:
    """psycopg 3's import alone cost 0.17 s of every run; psycopg2 reads the same."""
    probe = (
        "import sys, sqlalchemy as sa\n"
        "from ingestion_platform.sources.sql.connectors.sql_database import make_engine\n"
        f"engine = make_engine({postgres_url!r})\n"
        "with engine.connect() as c:\n"
        "    print(c.execute(sa.text('select 41 + 1')).scalar_one(), engine.dialect.driver,\n"
        "          'psycopg' in sys.modules)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == ["42", "psycopg2", "False"]


def test_a_url_naming_psycopg_3_still_reads_through_it(postgres_url: str) -> None:
    url = sa.make_url(postgres_url).set(drivername="postgresql+psycopg")
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("select 41 + 1")).scalar_one() == 42
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()
