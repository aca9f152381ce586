"""DuckLake as the warehouse: table metadata in a PostgreSQL catalog, data as Parquet files.

Switching the warehouse from its DuckDB file to a DuckLake is configuration, not code: every
landing module opens its connections through `Warehouse`, which here attaches the lake as
the connection's default catalog, so the same SQL ("schema"."table", one transaction that
deletes a slice and inserts it) runs unchanged, and dlt loads through its `ducklake`
destination. A DuckLake transaction is a snapshot committed in the catalog: readers never
wait for a writer, and a failed landing commits nothing.

Two writers that touch one table at once conflict at commit, and a slice's transaction
cannot simply be retried (it streams from the source). Writers therefore take a PostgreSQL
advisory lock in the catalog's database: the same one-writer rule as the file lock, but it
holds across hosts, so runs may start on any machine that reaches the catalog and the data
path. The lock is tied to the session, so a killed run releases it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import duckdb
import sqlalchemy as sa
from filelock import Timeout

from ingestion_platform.core.database_urls import engine_url
from ingestion_platform.core.duckdb_extensions import install_packaged_extensions
from ingestion_platform.core.sql_quoting import quote_literal

CATALOG_ENV = "INGESTION_WAREHOUSE_DUCKLAKE_CATALOG"
DATA_PATH_ENV = "INGESTION_WAREHOUSE_DUCKLAKE_DATA_PATH"
# The lake's name: the catalog every connection attaches and uses, and the schema of its
# metadata tables in the PostgreSQL database.
LAKE_NAME = "warehouse"
_LOCK_POLL_SECONDS = 0.2
# The lake locks this thread holds: a second session of the same process would wait for the
# first for ever.
_held_here = threading.local()


class LakeConfigError(ValueError):
    """A DuckLake setting that cannot work, naming the variable and the fix."""


@dataclass(frozen=True)
class DuckLake:
    """Where a DuckLake warehouse lives: its PostgreSQL catalog and its data path."""

    catalog_url: str
    data_path: str

    @classmethod
    def from_settings(cls, catalog_url: str, data_path: str | None) -> DuckLake:
        url = _parse(catalog_url)
        if url.get_backend_name() != "postgresql":
            raise LakeConfigError(
                f"{CATALOG_ENV}: the catalog must be a PostgreSQL database, got a "
                f"{url.get_backend_name()!r} URL. Fix: set it to "
                "postgresql://USER@HOST:5432/DATABASE (the password in PGPASSWORD)"
            )
        if not data_path:
            raise LakeConfigError(
                f"{DATA_PATH_ENV} is not set, and a DuckLake needs a place for its Parquet "
                f"files. Fix: export {DATA_PATH_ENV}=s3://BUCKET/PREFIX/ (or a folder every "
                "run host mounts)"
            )
        return cls(catalog_url=catalog_url, data_path=data_path)

    @property
    def shown(self) -> str:
        """The catalog's address without its password, for messages and metadata."""
        return _parse(self.catalog_url).render_as_string(hide_password=True)

    def attach_sql(self, read_only: bool = False) -> str:
        """DuckDB's ATTACH for the lake; a read-only one for readers."""
        url = _parse(self.catalog_url)
        parts = {
            "host": url.host,
            "port": url.port,
            "dbname": url.database,
            "user": url.username,
            "password": url.password,
        }
        libpq = " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)
        options = (
            f"DATA_PATH {quote_literal(self.data_path)}, METADATA_SCHEMA {quote_literal(LAKE_NAME)}"
        )
        if read_only:
            options += ", READ_ONLY"
        return f"ATTACH {quote_literal('ducklake:postgres:' + libpq)} AS {LAKE_NAME} ({options})"

    def connect(self, config: dict[str, Any], read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection whose default catalog is the lake."""
        try:
            return self._attach(config, read_only)
        except duckdb.Error as error:
            if not (read_only and "does not exist" in str(error)):
                raise self._unreachable(error) from None
        # A new lake: a read-only attach cannot create its metadata, a writing one does. Two
        # processes creating it at once conflict in PostgreSQL; the loser finds it created.
        try:
            self._attach(config, read_only=False).close()
        except duckdb.Error:
            pass
        try:
            return self._attach(config, read_only)
        except duckdb.Error as error:
            raise self._unreachable(error) from None

    def storage_secret_sql(self) -> str | None:
        """For a data path in S3, DuckDB's secret: AWS's own credential chain and variables."""
        if not self.data_path.startswith("s3://"):
            return None
        # The chain boto3 uses (environment, profile, instance role), read by DuckDB itself,
        # so no key passes through the platform; an endpoint for S3-compatible stores.
        options = ["TYPE s3", "PROVIDER credential_chain"]
        if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            options.append(f"REGION {quote_literal(region)}")
        if endpoint := _s3_endpoint():
            url = urlsplit(endpoint)
            options += [
                f"ENDPOINT {quote_literal(url.netloc)}",
                "URL_STYLE 'path'",
                f"USE_SSL {str(url.scheme == 'https').lower()}",
            ]
        return f"create or replace secret lake_storage ({', '.join(options)})"

    def _attach(self, config: dict[str, Any], read_only: bool) -> duckdb.DuckDBPyConnection:
        install_packaged_extensions()
        connection = duckdb.connect(config=config)
        try:
            if secret := self.storage_secret_sql():
                connection.execute(secret)
            connection.execute(self.attach_sql(read_only))
            connection.execute(f"use {LAKE_NAME}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _catalog_session(self, engine: sa.Engine) -> sa.Connection:
        try:
            return engine.connect()
        except sa.exc.DBAPIError as error:
            problem = str(error.orig).strip().splitlines()[0]
        # Raised outside the `except`: a database error in its context would read as the
        # source's own (sources/sql/connectors/sql_database.py, `read_failure`).
        raise self._unreachable(problem)

    def _unreachable(self, error: Exception | str) -> ConnectionError:
        # DuckDB's message may quote the connection string, password included.
        message = str(error)
        password = _parse(self.catalog_url).password
        if password:
            message = message.replace(password, "***")
        return ConnectionError(
            f"cannot attach the DuckLake warehouse (catalog {self.shown}, data path "
            f"{self.data_path}): {message}. Fix: check {CATALOG_ENV} and {DATA_PATH_ENV}, "
            "and that the catalog database is reachable"
        )

    @contextmanager
    def writer_lock(self, timeout: float) -> Iterator[None]:
        """Hold the lake's writer lock, across every host that uses this catalog."""
        key = _lock_key(self.shown)
        held = _held_here.__dict__.setdefault("keys", set())
        if key in held:  # re-entered by this thread, as the file lock allows
            yield
            return
        held.add(key)
        try:
            with self._advisory_lock(key, timeout):
                yield
        finally:
            held.discard(key)

    @contextmanager
    def _advisory_lock(self, key: int, timeout: float) -> Iterator[None]:
        engine = sa.create_engine(engine_url(_parse(self.catalog_url)), poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + timeout
        try:
            with self._catalog_session(engine) as session:
                while not session.execute(
                    sa.text("select pg_try_advisory_lock(:key)"), {"key": key}
                ).scalar_one():
                    if time.monotonic() >= deadline:
                        raise Timeout(f"the DuckLake writer lock at {self.shown}")
                    time.sleep(_LOCK_POLL_SECONDS)
                try:
                    yield
                finally:
                    session.execute(sa.text("select pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()

    def dlt_destination(self) -> Any:
        """dlt's `ducklake` destination for the same lake."""
        import dlt
        from dlt.destinations.impl.ducklake.configuration import DuckLakeCredentials

        credentials = DuckLakeCredentials(
            ducklake_name=LAKE_NAME,
            metadata_schema=LAKE_NAME,
            catalog=self.catalog_url,
            storage=self._dlt_storage(),
        )
        return dlt.destinations.ducklake(credentials=credentials)

    def _dlt_storage(self) -> Any:
        if not self.data_path.startswith("s3://"):
            return self.data_path
        import boto3
        from dlt.common.configuration.specs import AwsCredentials
        from dlt.common.storages.configuration import FilesystemConfiguration

        # The same chain as DuckDB's secret above, through a boto3 session.
        aws = AwsCredentials()
        aws.parse_native_representation(boto3.Session())
        aws.endpoint_url = _s3_endpoint()
        return FilesystemConfiguration(bucket_url=self.data_path, credentials=aws)


def _parse(catalog_url: str) -> sa.URL:
    try:
        return sa.make_url(catalog_url)
    except sa.exc.ArgumentError:
        raise LakeConfigError(
            f"{CATALOG_ENV} is not a database URL. Fix: set it to "
            "postgresql://USER@HOST:5432/DATABASE (the password in PGPASSWORD)"
        ) from None


def _s3_endpoint() -> str | None:
    """An S3-compatible endpoint, from boto3's own variables (unset for AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _lock_key(catalog: str) -> int:
    """A stable 63-bit advisory-lock key for one lake."""
    digest = hashlib.sha256(f"ingestion_platform:{catalog}:{LAKE_NAME}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
