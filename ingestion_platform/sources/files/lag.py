"""Lag of a file source: complete files at the source that no landed partition holds.

Measured apart from the sensor: the folder (or bucket prefix) is listed again, a file is
complete once its done-marker exists or its mtime is older than the settle time, and it is
held only if its version's cut marker names a partition that has landed. Files that settle
for ever, a partial batch whose `max_wait` never fires, a file whose run failed, a file
older than `batch.start`: each shows here as files waiting, with the oldest's mtime.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ingestion_platform.core.batching import parse_duration
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.lag import LagMeasure, SourceLag
from ingestion_platform.sources.files.connectors.entries import FileEntry
from ingestion_platform.sources.files.manifest import ManifestStore, version_id


def file_lag_measure(
    component: Any, source: SourceContext, partitions_name: str, asset_key: dg.AssetKey
) -> LagMeasure:
    """The lag measure of a file source's table (run by its lag sensor, or from the UI)."""
    settle = parse_duration(component.settle)

    def measure(instance: dg.DagsterInstance) -> SourceLag:
        with source.naming_failures(ConnectionError):
            files = component.open_files(source)
            try:
                listing = files.list(component.recursive)
            finally:
                files.close()
        now = time.time()
        rules = component.rules
        complete = [
            entry
            for entry in listing.files
            if rules.wanted(entry.path)
            and (
                rules.marked_done(entry.path, listing.names)
                if rules.done_marker
                else now - entry.mtime >= settle
            )
        ]
        return waiting_files(instance, partitions_name, asset_key, complete)

    return measure


def waiting_files(
    instance: dg.DagsterInstance,
    partitions_name: str,
    asset_key: dg.AssetKey,
    complete: list[FileEntry],
) -> SourceLag:
    """Which of the `complete` files no landed partition holds."""
    markers = ManifestStore(instance, partitions_name).cut_markers(complete)
    landed = instance.get_materialized_partitions(asset_key)
    waiting = [
        entry
        for entry in complete
        if (marker := markers.get(version_id(entry))) is None or marker.key not in landed
    ]
    oldest = min((entry.mtime for entry in waiting), default=None)
    return SourceLag(
        waiting=len(waiting),
        unit="files",
        oldest_waiting_at=datetime.fromtimestamp(oldest, UTC) if oldest is not None else None,
        detail={"oldest_file": min(waiting, key=lambda e: (e.mtime, e.path)).path}
        if waiting
        else {},
        waiting_bytes=sum(entry.size for entry in waiting),
    )
