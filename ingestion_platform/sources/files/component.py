"""Files dropped on an SFTP or SCP server, or into a local inbox, landed exactly once.

One asset per source (`<source>/<table>`); a sensor lists the folder, waits until each
file is complete and cuts partitions: a file (`files: 1`, the default), N files, N bytes,
or the time window of the files' mtimes. The partition's manifest (path, size and mtime of
every file) lives in the Dagster instance (sources/files/manifest.py), so a replay reads the same
files, and fails naming the file if one changed or was removed. A run stages the files,
lands them in one DuckDB transaction with bad rows quarantined (sources/files/landing.py), and only
then archives them (under a name unique to the version, so a replay reads that version) or
deletes them. The transfer runs outside the warehouse's writer: a slow or stalled partner
never holds up other sources' landings, and a transfer that moves no byte for
`transfer_timeout` fails naming the source.
"""

import posixpath
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import duckdb
from pydantic import Field

from ingestion_platform.core.batching import BatchSpec, CheckedBatch, parse_bytes, parse_duration
from ingestion_platform.core.bounded import Port, PositiveInt
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health, landing_checks
from ingestion_platform.core.lag import lag_defs
from ingestion_platform.core.quarantine import summarize_quarantine
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.sources.files.connectors.column_types import canonical_types
from ingestion_platform.sources.files.connectors.entries import (
    DEFAULT_TEMP_SUFFIXES,
    FileFilter,
    FileTransport,
    Listing,
)
from ingestion_platform.sources.files.connectors.formats import (
    DEFAULT_MAX_LINE_SIZE,
    FormatOptions,
    UnreadableFile,
)
from ingestion_platform.sources.files.connectors.local import LocalFiles
from ingestion_platform.sources.files.connectors.sniff import plan_reads, unread_rows
from ingestion_platform.sources.files.lag import file_lag_measure
from ingestion_platform.sources.files.landing import ColumnRetypeError, land_files
from ingestion_platform.sources.files.manifest import ManifestEntry, ManifestStore, version_id
from ingestion_platform.sources.files.run import (
    check_manifest,
    file_metadata,
    stage_files,
    staging_folder,
)
from ingestion_platform.sources.files.sensor import (
    REFUSED_TAG,
    SensorCursor,
    build_files_sensor,
)

if TYPE_CHECKING:
    from ingestion_platform.sources.files.connectors.ssh import SshSettings


class FileSourceBase(dg.Component, dg.Model, dg.Resolvable):
    """What every file source shares: what to watch, when a file is complete, how to read it."""

    path: str
    table: str | None = None
    recursive: bool = False
    patterns: list[str] = Field(default_factory=lambda: ["*"])
    excludes: list[str] = Field(default_factory=list)
    settle: str = "30s"
    done_marker: str | None = None
    temp_suffixes: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMP_SUFFIXES))
    batch: CheckedBatch = Field(default_factory=lambda: BatchSpec(files=1))
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    header: bool = True
    delimiter: str | None = None  # "," (a tab for .tsv files)
    quote: str = '"'
    encoding: str = "utf-8"
    max_line_size: int | str = DEFAULT_MAX_LINE_SIZE
    columns: dict[str, str] | None = None
    on_bad_file: Literal["quarantine", "fail"] = "quarantine"
    transfer_timeout: str = "5m"
    after_landing: Literal["keep", "archive", "delete"] = "keep"
    archive_folder: str = ".archive"
    automation: Literal["running", "stopped"] = "stopped"
    sensor_interval_seconds: PositiveInt = 30
    health: HealthSpec = HealthSpec()

    kind_tag: str = "files"

    def open_files(self, source: SourceContext) -> FileTransport:
        raise NotImplementedError

    def where(self) -> str:
        return f"the local folder {self.path}"

    def describe(self, table: str) -> str:
        """What the asset holds and where it comes from, without secrets."""
        batch = self.batch
        per = (
            batch.every or f"window of the cron {batch.cron!r}"
            if batch.is_time
            else (f"{batch.size_threshold:,} {batch.size_unit}")
        )
        return (
            f"Files {', '.join(self.patterns)} from {self.where()}, landed into table {table}, "
            f"one partition per {per}; bad rows go to the source's _quarantine table."
        )

    def warn(self, log: Any, source: SourceContext) -> None:
        """Run on every tick and run: the SFTP source warns when key checks are skipped."""

    def list_for_tick(self, files: FileTransport, cursor: SensorCursor, now: float) -> Listing:
        """What the sensor sees this tick: the whole folder (object stores list less)."""
        return files.list(self.recursive)

    def after_tick(
        self, cursor: SensorCursor, listing: Listing, waiting: set[str], now: float
    ) -> None:
        """Called with the wanted files not landed yet, once the tick's cuts are planned."""

    @property
    def rules(self) -> FileFilter:
        return FileFilter(
            patterns=tuple(self.patterns),
            excludes=tuple(self.excludes),
            temp_suffixes=tuple(self.temp_suffixes),
            done_marker=self.done_marker,
            archive_folder=self.archive_folder.strip("/"),
        )

    @property
    def format_options(self) -> FormatOptions:
        return FormatOptions(
            format=self.format,
            header=self.header,
            delimiter=self.delimiter,
            quote=self.quote,
            encoding=self.encoding,
            columns=tuple((self.columns or {}).items()),
            max_line_size=parse_bytes(self.max_line_size),
        )

    @property
    def stall_seconds(self) -> float:
        return parse_duration(self.transfer_timeout)

    def _check(self, source: SourceContext) -> None:
        if not self.batch.is_time and self.batch.size_unit == "rows":
            raise source.error(
                "batch",
                "a file source counts files or bytes, not rows",
                "use `files: N`, `bytes: 256MB` or a time batch (`every: hour`)",
            )
        if self.batch.cron is not None:
            raise source.error("batch.cron", "file windows use `every:`", "e.g. every: hour")
        try:
            parse_duration(self.settle)
        except ValueError as error:
            raise source.error("settle", str(error), "e.g. settle: 30s") from None
        try:
            if parse_duration(self.transfer_timeout) <= 0:
                raise ValueError(f"must be positive, got {self.transfer_timeout!r}")
        except ValueError as error:
            raise source.error(
                "transfer_timeout", str(error), "e.g. transfer_timeout: 5m"
            ) from None
        try:
            if parse_bytes(self.max_line_size) <= 0:
                raise ValueError(f"must be positive, got {self.max_line_size!r}")
        except ValueError as error:
            raise source.error("max_line_size", str(error), "e.g. max_line_size: 64MB") from None
        if self.columns:
            with duckdb.connect() as probe:
                for column, kind in self.columns.items():
                    try:
                        canonical_types(probe, {column: kind})
                    except ValueError:
                        raise source.error(
                            f"columns.{column}",
                            f"{kind!r} is not a DuckDB type",
                            "e.g. BIGINT, DOUBLE, DECIMAL(12,2), DATE, TIMESTAMPTZ or VARCHAR",
                        ) from None
        self._check_archive_folder(source)
        # Every name ends with "": an empty ending would hide every file, with no error.
        if "" in self.temp_suffixes:
            raise source.error(
                "temp_suffixes",
                "holds an empty ending, which every name has, so no file would ever be taken",
                "list the endings of names still being written, e.g. temp_suffixes: [.part]",
            )
        if self.done_marker == "":
            raise source.error(
                "done_marker",
                "is empty, so every file would count as a marker and none would be taken",
                "name the marker's ending, e.g. done_marker: .done, or remove the setting",
            )

    def _check_archive_folder(self, source: SourceContext) -> None:
        """The archive is a folder inside the watched one: every transport moves files
        relative to `path`, so `/srv/done` would silently become `<path>/srv/done`."""
        folder = self.archive_folder
        if self.after_landing == "archive" and not folder.strip("/"):
            raise source.error("archive_folder", "is empty", "e.g. archive_folder: .archive")
        if self.after_landing == "archive" and posixpath.normpath(folder.strip("/")) == ".":
            raise source.error(
                "archive_folder",
                f"{folder!r} is the watched folder itself, where archived copies would be "
                "taken as new files",
                "name a folder inside it, e.g. archive_folder: .archive",
            )
        if folder.startswith("/") or ".." in folder.split("/"):
            raise source.error(
                "archive_folder",
                f"{folder!r} is not inside the watched folder (files are archived relative to "
                "`path`)",
                "name a folder inside it, e.g. archive_folder: .archive",
            )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        table = self.table or source.name
        name = f"{source.name}__{table}"
        partitions = self.batch.partitions_def(name)
        asset = self._asset(source, table, name, partitions)
        sensor = build_files_sensor(self, source, name, asset)
        lag = lag_defs(
            source=source.name,
            measures={asset.key: file_lag_measure(self, source, name, asset.key)},
            batch=self.batch,
            health=self.health,
            sensor_interval_seconds=self.sensor_interval_seconds,
        )
        return dg.Definitions.merge(dg.Definitions(assets=[asset], sensors=[sensor]), lag)

    def _asset(
        self, source: SourceContext, table: str, name: str, partitions: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        @dg.asset(
            key=[source.name, table],
            group_name=source.name,
            kinds={self.kind_tag, "duckdb"},
            description=self.describe(table),
            partitions_def=partitions,
            # No warehouse pool: the transfer must not hold the only slot; the landing takes
            # the warehouse's writer lock only around its commit (sources/files/landing.py).
            metadata={"source_file": source.defs_file},
            **asset_health(  # type: ignore[arg-type]
                dg.AssetKey([source.name, table]),
                self.batch,
                self.health,
                self.sensor_interval_seconds,
                quarantines=True,
            ),
        )
        def _land_files(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Lands the partition's exact file set, bad rows quarantined. (Not a docstring: the
            # description is set above, and Dagster would parse a docstring for every asset.)
            with source.naming_failures(ConnectionError):
                return self._materialize(context, warehouse.get(), source, table, name)

        return _land_files

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: Any,
        source: SourceContext,
        table: str,
        name: str,
    ) -> dg.MaterializeResult:
        self.warn(context.log, source)
        key = context.partition_key
        store = ManifestStore(context.instance, name)
        manifest = store.get(key)
        if manifest is None:
            raise source.error(
                "batch",
                f"partition {key!r} has no file manifest in this Dagster instance",
                f"let the sensor {name}__sensor cut partitions; it records each file set",
            )
        staging_root = warehouse.path.parent / ".staging" / source.name
        files = self.open_files(source)
        try:
            check_manifest(files, manifest)
            with staging_folder(staging_root, context.run_id, context.log) as staging:
                transfer = stage_files(files, manifest, staging, context.log)
                staged = list(zip(transfer.local_paths, [e.path for e in manifest], strict=True))
                options = self.format_options
                reads, unreadable = plan_reads(staged, options)
                unread = {
                    label: unread_rows(local, label, options)
                    for local, label in staged
                    if label in unreadable
                }
                try:
                    report = land_files(
                        warehouse=warehouse,
                        source=source.name,
                        table=table,
                        batch_key=key,
                        reads=reads,
                        unreadable=unreadable,
                        on_bad_file=self.on_bad_file,
                        unread=unread,
                    )
                except UnreadableFile as error:
                    raise _bad_file_error(source, str(error)) from None
                except ColumnRetypeError as error:
                    raise source.error(
                        f"columns.{error.column}",
                        str(error),
                        "fix or remove those rows, or declare a type that holds them",
                    ) from None
            # Only after the commit: a failed run leaves every file where it was.
            manifest = self._after_landing(files, store, key, manifest, context)
        finally:
            files.close()
        context.log.info(
            f"{source.name}.{table}: {len(manifest)} file(s), {report.rows_landed} rows landed, "
            f"{report.rows_quarantined} quarantined, {len(report.bad_files)} bad file(s)"
        )
        for label, reason in report.bad_files.items():
            context.log.warning(
                f"{source.name}.{table}: {label} quarantined whole "
                f"({report.bad_file_rows.get(label, 1):,} record(s) not landed): {reason}"
            )
        refused = int(context.run.tags.get(REFUSED_TAG, 0))
        checks = landing_checks(
            context.asset_key,
            read=report.rows_read,
            quarantined=report.rows_quarantined,
            landed=warehouse.count_batches(source.name, table, [key]),
            new_columns=[] if report.table_created else report.new_columns,
            warn_share=self.health.quarantine_warn_share,
            quarantine=summarize_quarantine(warehouse, source.name, [key])
            if report.rows_quarantined
            else None,
        )
        return dg.MaterializeResult(
            metadata=file_metadata(report, transfer, manifest, refused), check_results=checks
        )

    def _after_landing(
        self,
        files: FileTransport,
        store: ManifestStore,
        key: str,
        manifest: list[ManifestEntry],
        context: dg.AssetExecutionContext,
    ) -> list[ManifestEntry]:
        if self.after_landing == "keep":
            return manifest
        moved = []
        for entry in manifest:
            if self.after_landing == "delete":
                files.remove(entry.current_path)
                moved.append(entry)
                continue
            if entry.archived_to:
                moved.append(entry)
                continue
            target = f"{self.archive_folder.strip('/')}/{archive_name(entry)}"
            new_etag = files.move(entry.path, target)
            moved.append(replace(entry, archived_to=target, archived_etag=new_etag))
            # Recorded file by file, so a replay finds every file moved so far.
            store.put(key, moved + manifest[len(moved) :])
        context.log.info(f"{self.after_landing}d {len(manifest)} file(s) after the commit")
        return moved


def archive_name(entry: ManifestEntry) -> str:
    """`<path>.<mtime>-<version hash>`: each version of a re-uploaded file keeps its own
    archived copy, so replaying an earlier partition reads exactly what it landed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(entry.mtime))
    return f"{entry.path}.{stamp}-{version_id(entry)[:8]}"


def _bad_file_error(source: SourceContext, message: str) -> Exception:
    """`on_bad_file: fail` stopped the run: name the file, the cause and a fix."""
    problem, _, fix = message.partition(". Fix: ")
    if "max_line_size" in fix:
        return source.error("max_line_size", problem, fix.split("defs.yaml, ")[-1])
    return source.error(
        "on_bad_file",
        f"{problem} (on_bad_file: fail stops the run; nothing was landed or moved)",
        "fix or re-export the file and upload it again, or set on_bad_file: quarantine to "
        "land the other files and keep this one in the source's _quarantine table",
    )


class LocalFileSource(FileSourceBase):
    """Files dropped by hand into a folder on this machine, landed once each is complete."""

    def open_files(self, source: SourceContext) -> FileTransport:
        try:
            return LocalFiles(self.path)
        except FileNotFoundError as error:
            raise source.error("path", str(error), "create the folder or fix `path`") from None


class SftpFileSource(FileSourceBase):
    """Files a partner drops on an SFTP (or SCP-only) server, host key verified."""

    host: str
    port: Port = 22
    username: Setting
    private_key: Setting | None = None
    passphrase: Setting | None = None
    password: Setting | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    insecure_skip_host_key_check: bool = False
    transport: Literal["sftp", "scp"] = "sftp"
    kind_tag: str = "sftp"

    def where(self) -> str:
        return f"the {self.transport.upper()} server {self.host}:{self.port}, folder {self.path}"

    def settings(self, source: SourceContext) -> "SshSettings":
        # Imported here: paramiko and asyncssh load only in processes that open the server.
        from ingestion_platform.sources.files.connectors.ssh import SshSettings

        key = None
        if self.private_key is not None:
            key = source.resolve(self.private_key, "private_key")
            if "PRIVATE KEY-----" not in key:  # a path, not the key itself
                key = Path(key).expanduser().read_text()
        return SshSettings(
            host=self.host,
            port=self.port,
            username=source.resolve(self.username, "username"),
            private_key=key,
            passphrase=source.resolve(self.passphrase, "passphrase") if self.passphrase else None,
            password=source.resolve(self.password, "password") if self.password else None,
            host_key=self.host_key,
            known_hosts=self.known_hosts,
            insecure_skip_host_key_check=self.insecure_skip_host_key_check,
        )

    def _check(self, source: SourceContext) -> None:
        super()._check(source)
        if not (self.host_key or self.known_hosts or self.insecure_skip_host_key_check):
            raise source.error(
                "host_key",
                f"no way to verify the server {self.host}:{self.port}",
                'pin its key (host_key: "ssh-ed25519 AAAA…") or set known_hosts: <file>',
            )
        if self.private_key is None and self.password is None:
            raise source.error(
                "private_key", "no credentials", "set private_key (or password: {env: NAME})"
            )

    def warn(self, log: Any, source: SourceContext) -> None:
        if self.insecure_skip_host_key_check:
            log.warning(
                f"{source.defs_file}: insecure_skip_host_key_check is on: the identity of "
                f"{self.host}:{self.port} is NOT verified; pin host_key to fix"
            )

    def open_files(self, source: SourceContext) -> FileTransport:
        settings = self.settings(source)
        if self.transport == "scp":
            from ingestion_platform.sources.files.connectors.scp import ScpFiles

            return ScpFiles(settings, self.path, self.stall_seconds)
        from ingestion_platform.sources.files.connectors.sftp import SftpFiles

        return SftpFiles(settings, self.path, self.stall_seconds)


class S3FileSource(FileSourceBase):
    """Objects written under an S3 prefix, each version landed once (a new ETag lands again)."""

    bucket: str
    prefix: str = ""
    path: str = ""
    region: str | None = None
    endpoint_url: Setting | None = None
    profile: str | None = None
    recursive: bool = True
    # An object is visible only once its upload completed, so nothing needs to settle.
    settle: str = "0s"
    full_listing_every: str = "10m"
    kind_tag: str = "s3"

    def where(self) -> str:
        place = f"s3://{self.bucket}/{self.prefix.strip('/')}"
        if isinstance(self.endpoint_url, str):
            return f"{place} at {self.endpoint_url}"
        return place

    def _check(self, source: SourceContext) -> None:
        super()._check(source)
        if self.path:
            raise source.error("path", "an S3 source reads `prefix`", f"prefix: {self.path}")
        try:
            parse_duration(self.full_listing_every)
        except ValueError as error:
            raise source.error("full_listing_every", str(error), "e.g. 10m") from None

    def open_files(self, source: SourceContext) -> FileTransport:
        # Imported here: boto3 loads only in processes that reach S3.
        from ingestion_platform.sources.files.connectors.s3 import S3Files, s3_client

        endpoint = source.resolve(self.endpoint_url, "endpoint_url") if self.endpoint_url else None
        return S3Files(s3_client(self.region, endpoint, self.profile), self.bucket, self.prefix)

    def list_for_tick(self, files: FileTransport, cursor: SensorCursor, now: float) -> Listing:
        """Keys after the cursor's; the whole prefix every `full_listing_every`, which finds
        an object written late under an earlier key, and overwritten objects."""
        from ingestion_platform.sources.files.connectors.s3 import S3Files

        assert isinstance(files, S3Files)
        due = cursor.full_listing_at is None or (
            now - cursor.full_listing_at >= parse_duration(self.full_listing_every)
        )
        if due:
            cursor.full_listing_at = now
            cursor.start_after = None
        listing = files.list(self.recursive, start_after=cursor.start_after)
        if not due:  # refused keys before the cursor's are still there until a full listing
            for name in cursor.refused:
                listing.refused.setdefault(name, "refused at the last full listing")
        return listing

    def after_tick(
        self, cursor: SensorCursor, listing: Listing, waiting: set[str], now: float
    ) -> None:
        # The next tick starts after the last key before the first one still waiting.
        keys = sorted(listing.names | set(listing.refused))
        first_waiting = min(waiting) if waiting else None
        handled = [k for k in keys if first_waiting is None or k < first_waiting]
        if handled:
            cursor.start_after = handled[-1]
