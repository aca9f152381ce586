"""How a files sensor cuts partitions from the complete files that no final cut holds.

Size batches: groups of N files (or bytes), oldest first, a partial group once it waited
`max_wait`. Time batches: one cut per closed window that gained files. And cuts written by
an evaluation whose tick was never committed, asked for again exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ingestion_platform.core.backlog import MAX_BATCHES_PER_RUN
from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.sources.files.connectors.entries import FileEntry, walk_order
from ingestion_platform.sources.files.cursor import SensorCursor
from ingestion_platform.sources.files.manifest import (
    CutMarker,
    ManifestEntry,
    ManifestStore,
    size_partition_key,
    version_id,
)

# A backlog is landed as one partition of at most this many full groups (core/backlog.py).
MAX_CUTS_PER_TICK = MAX_BATCHES_PER_RUN


@dataclass(frozen=True)
class Cut:
    """A partition to request: its key, its manifest, and the run key that asks for it once."""

    key: str
    entries: list[ManifestEntry]
    run_key: str


def plan_size_cuts(
    pending: list[FileEntry], spec: BatchSpec, cursor: SensorCursor, now: float
) -> list[list[FileEntry]]:
    """Groups of N files (or ≥ N bytes), oldest first; a partial group waits for max_wait."""
    groups: list[list[FileEntry]] = []
    group: list[FileEntry] = []
    size = 0
    threshold = spec.size_threshold
    for entry in walk_order(pending):
        group.append(entry)
        size += entry.size if spec.size_unit == "bytes" else 1
        if size >= threshold:
            groups.append(group)
            group, size = [], 0
            if len(groups) == MAX_CUTS_PER_TICK:
                return groups
    if not group:
        cursor.waiting_since = None
        return groups
    cursor.waiting_since = cursor.waiting_since or now
    max_wait = spec.max_wait_seconds
    if max_wait is not None and now - cursor.waiting_since >= max_wait:
        groups.append(group)
        cursor.waiting_since = None
    return groups


def size_cuts(store: ManifestStore, groups: list[list[FileEntry]], name: str) -> list[Cut]:
    cuts = []
    for group in groups:
        key = size_partition_key(group)
        cuts.append(Cut(key, [ManifestEntry.of(e) for e in group], f"{name}:{key}"))
    return cuts


def orphan_cuts(store: ManifestStore, orphans: dict[str, CutMarker], listed: set[str]) -> list[Cut]:
    """Size cuts written by an evaluation whose tick was never committed (a preview, a
    daemon that died), asked for again exactly as they were: same key, files and run key.

    Its dynamic partition may already exist (the daemon adds it before creating the run),
    so re-planning its files into another batch could land them twice. A cut is offered
    again only while every file of it is listed at the version cut and still marked for
    it; otherwise its files that are still uncut are planned afresh.
    """
    cuts = []
    for key, run_key in sorted({(m.key, m.run_key) for m in orphans.values()}):
        manifest = store.get(key)
        if run_key is None or not manifest:
            continue
        versions = [version_id(entry) for entry in manifest]
        if all(v in listed and orphans.get(v) == CutMarker(key, run_key) for v in versions):
            cuts.append(Cut(key, manifest, run_key))
    return cuts[:MAX_CUTS_PER_TICK]


def time_cuts(
    store: ManifestStore,
    pending: list[FileEntry],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    name: str,
    now: float,
) -> tuple[list[Cut], list[FileEntry]]:
    """A cut per closed window that gained files (late files re-cut their window)."""
    by_window: dict[str, list[FileEntry]] = {}
    early: list[FileEntry] = []
    start = partitions_def.start.timestamp()
    for entry in pending:
        if entry.mtime < start:
            early.append(entry)
            continue
        key = partitions_def.get_partition_key_for_timestamp(entry.mtime)
        if partitions_def.time_window_for_partition_key(key).end.timestamp() <= now:
            by_window.setdefault(key, []).append(entry)
    cuts = []
    for key, entries in sorted(by_window.items())[:MAX_CUTS_PER_TICK]:
        known = {e.path: e for e in store.get(key) or []}
        for entry in entries:  # a newer version of a file replaces the older one
            known[entry.path] = ManifestEntry.of(entry)
        manifest = sorted(known.values(), key=lambda e: (e.mtime, e.path))
        digest = size_partition_key([e.listed() for e in manifest])
        cuts.append(Cut(key, manifest, f"{name}:{key}:{digest.rsplit('@', 1)[1]}"))
    return cuts, early
