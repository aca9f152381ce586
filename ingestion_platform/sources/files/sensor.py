"""The files sensor: list, wait until each file is complete, cut partitions, never twice.

A file is complete when its done-marker exists (`x.csv.done`), or once its size and mtime
stayed the same across checks for the settle time; temp names (`x.csv.part`) never are.
Which versions (path, size, mtime) were already cut lives in the Dagster instance
(sources/files/manifest.py; final only once the run that lands it exists), so the cursor only holds
files not yet cut (capped) and since when a partial size batch has waited: it stays small
however many files the folder holds, and a file copied in with an old mtime is noticed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ingestion_platform.core.backlog import held_note, stream_tags, waiting_runs
from ingestion_platform.core.batching import BatchSpec, parse_duration
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.sources.files.connectors.entries import FileEntry, FileFilter
from ingestion_platform.sources.files.cursor import SensorCursor
from ingestion_platform.sources.files.cuts import (
    orphan_cuts,
    plan_size_cuts,
    size_cuts,
    time_cuts,
)
from ingestion_platform.sources.files.manifest import ManifestStore, version_id

# Refused names remembered so each is warned about once, not on every tick.
MAX_REFUSED = 100
REFUSED_TAG = "ingestion_platform/refused_names"


def report_refused(refused: dict[str, str], cursor: SensorCursor, log: Any, source: str) -> str:
    """Warn once per newly refused name (20 lines at most); returns the skip-reason note."""
    names = sorted(name[:200] for name in refused)
    known = set(cursor.refused)
    new = [name for name in names if name not in known]
    for name in new[:20]:
        log.warning(f"{source}: refused {name!r}: {refused.get(name, 'unsafe name')}")
    if len(new) > 20:
        log.warning(f"{source}: {len(new) - 20} more name(s) refused")
    cursor.refused = names[:MAX_REFUSED]
    if not names:
        return ""
    return f"; {len(names)} unsafe name(s) refused, e.g. {names[0]!r}"


def stable_files(
    uncut: list[FileEntry],
    names: set[str],
    rules: FileFilter,
    settle_seconds: int,
    cursor: SensorCursor,
    now: float,
) -> list[FileEntry]:
    """The files of `uncut` (wanted, in no final cut) that are complete now.

    `cursor.settling` remembers each of them, complete or not, with the time its size and
    mtime were first seen as they are: a complete file that waits for its batch stays
    complete on the next tick instead of settling again (which reset a partial batch's
    `max_wait` for ever). Files already cut are never remembered, so the cursor holds only
    what waits, however many landed files the folder keeps.
    """
    stable: list[FileEntry] = []
    settling: dict[str, list[float]] = {}
    for entry in uncut:
        if rules.done_marker is not None:
            if rules.marked_done(entry.path, names):
                stable.append(entry)
            continue
        if settle_seconds <= 0:
            stable.append(entry)
            continue
        size, mtime, since = cursor.settling.get(entry.path, (None, None, now))
        if (size, mtime) != (entry.size, entry.mtime):
            since = now
        settling[entry.path] = [entry.size, entry.mtime, since]
        if now - since >= settle_seconds:
            stable.append(entry)
    cursor.settling = settling
    return stable


def _partial_batch_note(
    spec: BatchSpec,
    pending: list[FileEntry],
    cursor: SensorCursor,
    partitions: dg.PartitionsDefinition | None,
) -> str:
    """For size batches: what the partial batch waits for, and when max_wait cuts it."""
    if not pending or isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        return ""
    unit = "bytes" if spec.size_unit == "bytes" else "files"
    note = f"; the batch waits for {spec.size_threshold} {unit}"
    if spec.max_wait_seconds is not None and cursor.waiting_since is not None:
        due = datetime.fromtimestamp(cursor.waiting_since + spec.max_wait_seconds, UTC)
        note += f", or max_wait cuts it at {due:%Y-%m-%d %H:%M:%S} UTC"
    return note


def _open_windows_note(partitions: dg.PartitionsDefinition, files: list[FileEntry]) -> str:
    """For time batches: how many complete files wait for their window, and when it closes."""
    if not files or not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        return ""
    closes = min(
        partitions.time_window_for_partition_key(
            partitions.get_partition_key_for_timestamp(entry.mtime)
        ).end
        for entry in files
    )
    first = f"{closes:%Y-%m-%d %H:%M %Z}"
    return f"; {len(files)} file(s) wait for their window to close (the first at {first})"


def build_files_sensor(
    component: Any, source: SourceContext, name: str, asset: dg.AssetsDefinition
) -> dg.SensorDefinition:
    """The source's sensor: list, keep what is complete and new, cut and record partitions."""
    partitions = asset.partitions_def
    settle = parse_duration(component.settle)

    @dg.sensor(
        name=f"{name}__sensor",
        asset_selection=[asset.key],
        minimum_interval_seconds=component.sensor_interval_seconds,
        description=f"Lists {component.where()} and cuts a partition per complete file set.",
        default_status=dg.DefaultSensorStatus.RUNNING
        if component.automation == "running"
        else dg.DefaultSensorStatus.STOPPED,
    )
    def _files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        component.warn(context.log, source)
        cursor = SensorCursor.parse(context.cursor)
        now = time.time()
        with source.naming_failures(ConnectionError):
            files = component.open_files(source)
            try:
                listing = component.list_for_tick(files, cursor, now)
            finally:
                files.close()
        refused_note = report_refused(listing.refused, cursor, context.log, source.name)
        tags = {REFUSED_TAG: str(len(listing.refused)), **stream_tags(name)}
        store = ManifestStore(context.instance, name)
        wanted = [e for e in listing.files if component.rules.wanted(e.path)]
        done, orphans = store.cut_state(wanted)
        if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            again = []  # a window's key and manifest come out the same when re-cut
        else:
            again = orphan_cuts(store, orphans, {version_id(e) for e in wanted})
        done |= {version_id(e) for cut in again for e in cut.entries}
        uncut = [e for e in wanted if version_id(e) not in done]
        pending = stable_files(uncut, listing.names, component.rules, settle, cursor, now)
        # While a run of this sensor waits to start, nothing new is cut (core/backlog.py).
        held = waiting_runs(context.instance, name)
        early: list[FileEntry] = []
        if held:
            cuts = again
        elif isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            cuts, early = time_cuts(store, pending, partitions, name, now)
            for entry in early:
                context.log.warning(f"{entry.path}: mtime before batch.start; not landed")
        else:
            planned = plan_size_cuts(pending, component.batch, cursor, now)
            if len(planned) > 1:  # behind: one run lands every full group as one
                planned = [[entry for group in planned for entry in group]]
            cuts = again + size_cuts(store, planned, name)
        # Files not landed yet (settling, unmarked, a partial batch, an open window).
        waiting = {e.path for e in listing.files if component.rules.wanted(e.path)}
        waiting -= {e.path for e in wanted if version_id(e) in done}
        waiting -= {e.path for cut in cuts for e in cut.entries}
        waiting -= {e.path for e in early}
        component.after_tick(cursor, listing, waiting, now)
        window_note = _open_windows_note(partitions, [e for e in pending if e.path in waiting])
        requests, new_keys = [], []
        for cut in cuts:
            store.put(cut.key, cut.entries)  # before the run exists that reads it
            # Final only once Dagster commits this tick and creates the run (file_manifest).
            store.mark_cut([e.listed() for e in cut.entries], cut.key, cut.run_key)
            for entry in cut.entries:
                cursor.settling.pop(entry.path, None)
            new_keys.append(cut.key)
            requests.append(dg.RunRequest(run_key=cut.run_key, partition_key=cut.key, tags=tags))
        dynamic = (
            [partitions.build_add_request(new_keys)]
            if new_keys and isinstance(partitions, dg.DynamicPartitionsDefinition)
            else []
        )
        if not requests:
            settling = len(set(cursor.settling) - {e.path for e in pending})
            batch_note = _partial_batch_note(component.batch, pending, cursor, partitions)
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    (f"{held_note(name, held)}; " if held else "")
                    + f"no new partition: {len(pending)} complete file(s) not yet cut, "
                    f"{settling} settling{batch_note}{window_note}{refused_note}"
                ),
                cursor=cursor.dump(),
            )
        return dg.SensorResult(
            run_requests=requests, dynamic_partitions_requests=dynamic, cursor=cursor.dump()
        )

    return _files_sensor
