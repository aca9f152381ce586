"""One file partition's run, before and after the landing: check, stage, report.

Before anything is fetched, every file of the manifest must still be what was cut (same
size and mtime, where it was or where it was archived to); a replay of a changed or removed
file fails naming it. Files are then streamed to a run-private staging folder under names
of our own (never the remote name), with progress in the run log for large files.

A run holds a file lock next to its staging folder while it lives. A run killed with -9
(or by the OOM killer) cannot remove its folder, but the kernel releases its lock, so the
next run of the source removes every folder whose lock it can take: disk never fills up
with partial transfers, and no run ever reads another run's files.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from filelock import FileLock, Timeout

from ingestion_platform.sources.files.connectors.entries import FileTransport
from ingestion_platform.sources.files.landing import FileLandingReport
from ingestion_platform.sources.files.manifest import ManifestEntry

PROGRESS_EVERY_SECONDS = 5.0


class ManifestMismatch(RuntimeError):
    """Files of a partition changed or disappeared since it was cut."""


@dataclass
class Transfer:
    """What staging moved: local paths (manifest order), bytes and time."""

    local_paths: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    resumed_from_bytes: int = 0  # bytes kept from partial copies when a transfer resumed

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def check_manifest(files: FileTransport, manifest: list[ManifestEntry]) -> None:
    problems = []
    for entry in manifest:
        wanted = entry.to_fetch()
        if wanted.version_id is not None:  # a versioned bucket keeps the exact version
            now = files.stat_version(wanted.path, wanted.version_id)  # type: ignore[attr-defined]
        else:
            now = files.stat(wanted.path)
        if now is None:
            problems.append(f"{wanted.path} was removed since it was landed")
            continue
        changes = []
        if now.size != entry.size:
            changes.append(f"size {entry.size:,} → {now.size:,}")
        if wanted.etag is not None:  # an object's identity is its ETag, not its mtime
            if now.etag != wanted.etag:
                changes.append(f"ETag {wanted.etag} → {now.etag}")
        elif now.mtime != entry.mtime:
            changes.append(f"mtime {_when(entry.mtime)} → {_when(now.mtime)}")
        if changes:
            problems.append(f"{wanted.path} changed since it was landed ({', '.join(changes)})")
    if problems:
        raise ManifestMismatch(
            "; ".join(problems) + ". This partition names exact file versions; a changed "
            "file is landed as a new partition by the sensor, so this one cannot be replayed"
        )


def _when(mtime: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mtime))


@contextmanager
def staging_folder(
    root: Path, run_id: str, log: logging.Logger | dg.DagsterLogManager
) -> Iterator[Path]:
    """`root/<run id>/`, locked while this run lives and removed after it; first removes the
    folders of runs that died without cleaning up (their lock is free)."""
    root.mkdir(parents=True, exist_ok=True)
    own = FileLock(str(root / f"{run_id}.lock"))
    with own:
        removed = [name for name in _dead_runs(root, run_id) if _remove(root, name)]
        if removed:
            log.info(f"removed the staging folders of {len(removed)} ended run(s): {removed}")
        folder = root / run_id
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    (root / f"{run_id}.lock").unlink(missing_ok=True)


def _dead_runs(root: Path, run_id: str) -> list[str]:
    names = {p.name.removesuffix(".lock") for p in root.iterdir()}
    return sorted(name for name in names if name != run_id)


def _remove(root: Path, name: str) -> bool:
    lock = FileLock(str(root / f"{name}.lock"), timeout=0)
    try:
        with lock:  # taken: its run is gone (a live run holds it until it ends)
            shutil.rmtree(root / name, ignore_errors=True)
            (root / f"{name}.lock").unlink(missing_ok=True)
    except Timeout:
        return False
    return True


def local_name(index: int, path: str) -> str:
    """Our own name for a staged file: its index, then the remote name's safe characters
    (keeping the extension, which tells the reader the format and compression)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", posixpath.basename(path))[-80:]
    return f"{index:05d}_{base}"


def stage_files(
    files: FileTransport,
    manifest: list[ManifestEntry],
    staging: Path,
    log: logging.Logger | dg.DagsterLogManager,
) -> Transfer:
    staging.mkdir(parents=True, exist_ok=True)
    transfer = Transfer()
    pairs = []
    for index, entry in enumerate(manifest):
        local = staging / local_name(index, entry.path)
        pairs.append((entry.to_fetch(), str(local)))
        transfer.local_paths.append(str(local))
    last = [time.monotonic()]

    def progress(path: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_SECONDS and done < total:
            last[0] = time.monotonic()
            log.info(f"{path}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB ({done / total:.0%})")

    started = time.monotonic()
    transfer.resumed_from_bytes = files.fetch(pairs, progress)
    transfer.seconds = time.monotonic() - started
    for (entry, local), item in zip(pairs, manifest, strict=True):
        got = Path(local).stat().st_size
        if got != item.size:
            raise ManifestMismatch(
                f"{entry.path}: staged {got:,} bytes but the file has {item.size:,}; it changed "
                "during the transfer"
            )
        transfer.bytes += got
    log.info(
        f"staged {len(manifest)} file(s), {transfer.bytes / 1e6:,.1f} MB in "
        f"{transfer.seconds:.2f}s ({transfer.mb_per_second:,.0f} MB/s)"
    )
    return transfer


def file_metadata(
    report: FileLandingReport, transfer: Transfer, manifest: list[ManifestEntry], refused: int
) -> dict[str, dg.RawMetadataValue]:
    """Counts that reconcile (read = landed + quarantined), transfer speed, files, schema,
    and how many unsafe names the listing that cut this partition refused."""
    return {
        "refused_names": refused,
        "dagster/row_count": report.rows_landed,
        "rows_read": report.rows_read,
        "rows_landed": report.rows_landed,
        "rows_quarantined": report.rows_quarantined,
        "bad_files": dg.MetadataValue.json(report.bad_files),
        "files": dg.MetadataValue.json(
            [
                {"path": e.path, "size": e.size, "mtime": e.mtime, "archived_to": e.archived_to}
                for e in manifest
            ]
        ),
        "rows_by_file": dg.MetadataValue.json(report.rows_by_file),
        "bytes_transferred": transfer.bytes,
        "resumed_from_bytes": transfer.resumed_from_bytes,
        "transfer_seconds": dg.MetadataValue.float(round(transfer.seconds, 3)),
        "transfer_mb_per_s": dg.MetadataValue.float(round(transfer.mb_per_second, 1)),
        "duration_seconds": dg.MetadataValue.float(round(report.duration_seconds, 3)),
        "new_columns": dg.MetadataValue.json(report.new_columns),
        "schema_changed": bool(report.new_columns),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, kind) for name, kind in report.columns.items()]
        ),
    }
