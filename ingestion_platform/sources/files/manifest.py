"""Which exact files a file partition holds, kept in the Dagster instance.

A file set (path, size and mtime of each file) is too long for a partition key once a batch
holds more than a few files, so the key names the set (first file, count, content hash)
and the set itself is stored in the instance's key-value storage (the table behind sensor
and daemon cursors): every process of a deployment reaches it, it outlives the sensor's
cursor, and a replay weeks later reads the same list. The sensor writes the manifest before
it asks for the partition; a run reads it, and after `archive` records where each file went.

The same storage answers "was this version of this file already cut?" with one entry per
(path, size, mtime), so the sensor's cursor never holds the listing, however large the
folder. Entries are written once per version and are small (a hash, the partition key and
the run key that asked for it).

A sensor writes these entries while it is evaluated, before Dagster commits its tick; an
evaluation whose tick is never committed (`dagster sensor preview`, a daemon that dies
first) would otherwise mark files cut that no run will ever land. A cut is therefore final
only once a run with its run key exists, which Dagster creates when it commits the tick; an
orphaned entry is ignored, and the files are offered again under the same key and run key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from ingestion_platform.sources.files.connectors.entries import FileEntry

_PREFIX = "ingestion_platform/files"
_LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a partition: as landed, and where it now lives if it was archived."""

    path: str
    size: int
    mtime: float
    archived_to: str | None = None
    etag: str | None = None
    version_id: str | None = None
    # An object store's copy can get a new ETag (S3 gives a multipart object one).
    archived_etag: str | None = None

    @property
    def current_path(self) -> str:
        return self.archived_to or self.path

    @property
    def current_etag(self) -> str | None:
        return self.archived_etag if self.archived_to else self.etag

    @classmethod
    def of(cls, entry: FileEntry) -> ManifestEntry:
        return cls(
            entry.path, entry.size, entry.mtime, etag=entry.etag, version_id=entry.version_id
        )

    def listed(self) -> FileEntry:
        """The file as it was listed when its partition was cut."""
        return FileEntry(self.path, self.size, self.mtime, self.etag, self.version_id)

    def to_fetch(self) -> FileEntry:
        """Where the file is now, and the exact version a transfer must read."""
        if self.archived_to:
            return FileEntry(self.archived_to, self.size, self.mtime, self.archived_etag)
        return self.listed()


def version_id(entry: FileEntry | ManifestEntry) -> str:
    identity = [entry.path, entry.size, entry.mtime]
    if entry.etag is not None:  # an object overwritten within a second keeps its mtime
        identity.append(entry.etag)
    text = json.dumps(identity)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def size_partition_key(entries: list[FileEntry]) -> str:
    """`<first file>+<more>@<hash>`: readable, and different for every version of the set."""
    digest = hashlib.sha256("".join(version_id(e) for e in entries).encode()).hexdigest()[:10]
    first = re.sub(r"[^A-Za-z0-9._-]+", "_", entries[0].path)[-60:]
    more = f"+{len(entries) - 1}" if len(entries) > 1 else ""
    return f"{first}{more}@{digest}"


class ManifestStore:
    """Manifests and cut versions of one partitions definition, in the instance's storage."""

    def __init__(self, instance: dg.DagsterInstance, partitions_name: str) -> None:
        self.instance = instance
        self.storage = instance.run_storage
        self.prefix = f"{_PREFIX}/{partitions_name}"

    def put(self, key: str, entries: list[ManifestEntry]) -> None:
        payload = json.dumps([asdict(e) for e in entries])
        self.storage.set_cursor_values({f"{self.prefix}/manifest/{key}": payload})

    def get(self, key: str) -> list[ManifestEntry] | None:
        name = f"{self.prefix}/manifest/{key}"
        payload = self.storage.get_cursor_values({name}).get(name)
        if payload is None:
            return None
        return [ManifestEntry(**item) for item in json.loads(payload)]

    def mark_cut(self, entries: Iterable[FileEntry], key: str, run_key: str) -> None:
        marker = json.dumps({"key": key, "run_key": run_key})
        pairs = {f"{self.prefix}/cut/{version_id(e)}": marker for e in entries}
        if pairs:
            self.storage.set_cursor_values(pairs)

    def cut_markers(self, entries: Iterable[FileEntry]) -> dict[str, CutMarker]:
        """The cut markers of `entries` by version id, final or not."""
        names = [f"{self.prefix}/cut/{version_id(e)}" for e in entries]
        markers: dict[str, CutMarker] = {}
        for start in range(0, len(names), _LOOKUP_CHUNK):
            chunk = set(names[start : start + _LOOKUP_CHUNK])
            for name, value in self.storage.get_cursor_values(chunk).items():
                markers[name.rsplit("/", 1)[1]] = CutMarker.parse(value)
        return markers

    def cut_state(self, entries: Iterable[FileEntry]) -> tuple[set[str], dict[str, CutMarker]]:
        """(version ids whose cut is final, orphaned markers by version id) among `entries`.

        A cut is final once a run with its run key exists; its markers are then rewritten
        without the run key, so later ticks ask the run storage only about recent cuts.
        """
        markers = self.cut_markers(entries)
        asked = sorted({m.run_key for m in markers.values() if m.run_key is not None})
        created: set[str] = set()
        for start in range(0, len(asked), _LOOKUP_CHUNK):
            runs = self.instance.get_runs(
                dg.RunsFilter(tags={RUN_KEY_TAG: asked[start : start + _LOOKUP_CHUNK]})
            )
            created.update(run.tags[RUN_KEY_TAG] for run in runs)
        final = {v for v, m in markers.items() if m.run_key is None or m.run_key in created}
        confirmed = {
            f"{self.prefix}/cut/{v}": m.key for v, m in markers.items() if m.run_key in created
        }
        if confirmed:
            self.storage.set_cursor_values(confirmed)
        orphans = {v: m for v, m in markers.items() if v not in final}
        return final, orphans


@dataclass(frozen=True)
class CutMarker:
    """Which partition a file version was cut into, and the run key that asked for it."""

    key: str
    # None for markers written before run keys were recorded: those cuts are final.
    run_key: str | None = None

    @classmethod
    def parse(cls, value: str) -> CutMarker:
        if value.startswith("{"):
            data = json.loads(value)
            return cls(data["key"], data["run_key"])
        return cls(value)
